"""Advertiser API pieces: token checks, report lanes and CSV, prefix reads."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from services.aggregate import report_query as rq
from services.aggregate.advertiser_api import refusal
from services.aggregate.store_reads import prefix_items
from shared.contract.report_deltas import row_key
from shared.kafka.api_tokens import TokenStore, new_token
from shared.kafka.partitioner import partition_of
from shared.runtime.app import seek_prefix

ACCOUNT = "549755885175"


class Reader:
    def __init__(self, store: TokenStore, ready: bool = True) -> None:
        self.store = store
        self.ready = asyncio.Event()
        if ready:
            self.ready.set()

    def verify(self, token: str) -> Any:
        return self.store.verify(token)


@pytest.fixture
def tokens() -> tuple[Reader, str, str]:
    mine, mine_record = new_token(ACCOUNT)
    other, other_record = new_token("111222333")
    return Reader(TokenStore([mine_record, other_record])), mine, other


def test_the_accounts_own_token_may_read(tokens: tuple[Reader, str, str]) -> None:
    reader, mine, _ = tokens
    assert refusal(reader, f"Bearer {mine}", ACCOUNT) is None  # type: ignore[arg-type]


def test_no_or_unknown_token_is_401_code_2(tokens: tuple[Reader, str, str]) -> None:
    reader, mine, _ = tokens
    for header in (None, "Bearer nope", mine):
        assert refusal(reader, header, ACCOUNT)[0:1] == (401,)  # type: ignore[arg-type,index]
    assert refusal(reader, None, ACCOUNT)[1]["code"] == 2  # type: ignore[arg-type,index]


def test_another_accounts_token_is_403_code_29(tokens: tuple[Reader, str, str]) -> None:
    reader, _, other = tokens
    assert refusal(reader, f"Bearer {other}", ACCOUNT) == (  # type: ignore[arg-type]
        403,
        {"code": 29, "message": "You are not permitted to access that resource."},
    )


def test_tokens_not_loaded_yet_is_503(tokens: tuple[Reader, str, str]) -> None:
    _, mine, _ = tokens
    reader = Reader(TokenStore(), ready=False)
    assert refusal(reader, f"Bearer {mine}", ACCOUNT)[0] == 503  # type: ignore[arg-type,index]


def test_lane_must_be_known() -> None:
    with pytest.raises(rq.QueryError, match="lane"):
        rq.parse_query({"ad_account_id": ACCOUNT, "lane": "magic"})


def test_row_prefix_matches_only_the_accounts_rows() -> None:
    query = rq.parse_query({"ad_account_id": "12"})
    row = dict.fromkeys(("campaign_id", "ad_group_id", "ad_id"), None)
    mine = row_key(
        {
            **row,
            "ad_account_id": "12",
            "event_name": "x",
            "attribution_type": "click",
            "date": "2025-01-01",
        }
    )
    other = row_key(
        {
            **row,
            "ad_account_id": "123",
            "event_name": "x",
            "attribution_type": "click",
            "date": "2025-01-01",
        }
    )
    assert mine.encode().startswith(query.row_prefix())
    assert not other.encode().startswith(query.row_prefix())


class FakeDb:
    """rocksdict's ``items(from_key=)`` over sorted keys."""

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self.sorted = sorted(items.items())
        self.read = 0

    def items(self, from_key: bytes) -> Any:
        for key, value in self.sorted:
            if key >= from_key:
                self.read += 1
                yield key, value


def test_prefix_read_seeks_and_stops_after_the_prefix() -> None:
    db = FakeDb({b"1:a": b"x", b"12:a": b"1", b"12:b": b"2", b"13:a": b"y", b"14:a": b"z"})
    dbs = {partition_of(b"12", 8): db}
    table = type("T", (), {"partitions": 8})()
    table.data = type("S", (), {"_dbs": dbs})()  # type: ignore[attr-defined]
    table.read_prefix = lambda partition, prefix: seek_prefix(dbs[partition], prefix)  # type: ignore[attr-defined]
    assert prefix_items(table, "12", b"12:") == [(b"12:a", b"1"), (b"12:b", b"2")]
    assert db.read == 3  # the two rows, then the first key past the prefix


def test_csv_has_a_column_per_field_and_currency() -> None:
    report = {
        "rows": [
            {"campaign_id": "c1", "conversions": 2, "value": {"USD": 1.5}},
            {"campaign_id": "c2", "conversions": 1, "value": {"EUR": 2.0}},
        ]
    }
    assert rq.to_csv(report).splitlines() == [
        "campaign_id,conversions,value.USD,value.EUR",
        "c1,2,1.5,",
        "c2,1,,2.0",
    ]


def test_protected_lane_lists_published_releases_in_range() -> None:
    release = {"release_id": "r", "week": "2025-W48", "released_at_ms": 1, "published": True}
    privacy = {
        "open": [],
        "weeks": {},
        "released": {
            "2025-11-20": {
                **release,
                "rows": {"k": {"ad_account_id": ACCOUNT, "conversions": 3.2}},
            },
            "2025-10-01": {
                **release,
                "rows": {"k": {"ad_account_id": ACCOUNT, "conversions": 1.0}},
            },
        },
    }
    query = rq.parse_query({"ad_account_id": ACCOUNT, "from": "2025-11-01", "lane": "protected"})
    assert rq.summarise_releases(query, privacy)["rows"] == [{"conversions": 3.2}]


def test_report_json_is_stable() -> None:
    query = rq.parse_query({"ad_account_id": ACCOUNT})
    assert orjson.loads(orjson.dumps(rq.summarise_rows(query, [])))["lane"] == "observed"
