"""bench.state: the synthetic links and engagements are valid inputs of the contract."""

from __future__ import annotations

import os

from bench.state import engagements, links, rss_mb
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
