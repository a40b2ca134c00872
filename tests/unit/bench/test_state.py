"""bench.state: the synthetic links, engagements and conversions are valid inputs of the
contract, and every user gets the mix they are meant to."""

from __future__ import annotations

import os

import orjson
import pytest

from bench.state import conversions, engagements, links, rss_mb
from services.ingest.rules import Valid, process_raw
from shared.contract.inputs import decode_engagement, decode_signal

NOW_MS = 1_764_151_200_000


def test_every_link_decodes_as_an_identity_signal() -> None:
    records = list(links(0, 300, users=50, now_ms=NOW_MS))
    assert {decode_signal(v)["op"] for _, _, v in records} == {"link"}
    assert len({k for _, k, _ in records}) == 300  # one identifier per link


def test_every_engagement_decodes_and_clicks_carry_a_click_id() -> None:
    decoded = [decode_engagement(v) for _, _, v in engagements(0, 400, users=50, now_ms=NOW_MS)]
    assert all((e["type"] == "click") == (e["click_id"] is not None) for e in decoded)
    assert sum(e["type"] == "click" for e in decoded) == 100


def test_slices_continue_where_the_last_one_stopped() -> None:
    first = [k for _, k, _ in links(0, 10, users=5, now_ms=NOW_MS)]
    second = [k for _, k, _ in links(10, 10, users=5, now_ms=NOW_MS)]
    assert not set(first) & set(second)


def test_rss_is_split_into_anonymous_and_file_pages() -> None:
    mine = rss_mb([("tests", os.getpid())])["tests"]
    assert mine["anon"] > 0 and mine["file"] > 0
    assert mine["anon"] + mine["file"] <= mine["rss"] + 1  # rounding; shmem aside
    assert mine["peak"] >= mine["rss"]


def test_rss_of_a_process_gone_is_left_out() -> None:
    assert rss_mb([("gone", 2**22 + 7)]) == {}


def test_every_conversion_is_valid_and_carries_only_links_of_its_user() -> None:
    loaded = {
        decode_signal(v)["key"]: decode_signal(v)["user_id"]
        for _, _, v in links(0, 300, users=50, now_ms=NOW_MS)
    }
    for item in conversions(0, 40, users=50, links_loaded=300, now_ms=NOW_MS):
        envelope = {**item.envelope, "received_at_ms": NOW_MS}
        valid = process_raw(
            orjson.dumps(envelope),
            item.key,
            topic="conversions.raw",
            partition=0,
            offset=0,
            timestamp_ms=NOW_MS,
            max_bytes=1 << 20,
            identifier_key="k" * 32,
        )
        assert isinstance(valid, Valid)
        assert valid.message["conversion_key"] == item.result_key
        hashes = [h for field in ("em", "ph", "hashed_maids") for h in valid.message["ids"][field]]
        assert len(hashes) == 3  # one of each key type: 6 links per user here
        assert len({loaded[h] for h in hashes}) == 1


def test_conversions_of_two_pushes_are_distinct() -> None:
    first = conversions(0, 20, users=50, links_loaded=300, now_ms=NOW_MS)
    second = conversions(20, 20, users=50, links_loaded=300, now_ms=NOW_MS)
    assert not {i.result_key for i in first} & {i.result_key for i in second}


def test_every_user_gets_clicks_and_views_whatever_the_number_of_users() -> None:
    for users in (40, 48):  # 48: a multiple of 4 once put every user in one kind
        decoded = [decode_engagement(v) for _, _, v in engagements(0, 8 * users, users, NOW_MS)]
        kinds: dict[str, set[str]] = {}
        for e in decoded:
            kinds.setdefault(e["user_id"], set()).add(e["type"])
        assert all(found == {"click", "view"} for found in kinds.values())


def test_a_users_links_take_every_key_type_whatever_the_number_of_users() -> None:
    for users in (50, 51):  # 51: a multiple of 3 once gave a user one key type
        types: dict[str, set[str]] = {}
        for _, _, v in links(0, 3 * users, users, NOW_MS):
            signal = decode_signal(v)
            types.setdefault(signal["user_id"], set()).add(signal["key_type"])
        assert all(found == {"em", "ph", "hashed_maid"} for found in types.values())


def test_conversions_need_a_loaded_user() -> None:
    with pytest.raises(ValueError):
        conversions(0, 1, users=50, links_loaded=0, now_ms=NOW_MS)
