"""shared.runtime.table_views: pagination, safe display, key -> owner routing, the token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.partitioner import partition_of
from shared.runtime.app import create_app
from shared.runtime.settings import Settings
from shared.runtime.table_views import (
    MAX_LIMIT,
    SAFE_FIELDS,
    PageError,
    PageQuery,
    display_key,
    owner_of,
    page,
    parse_page_query,
    redact,
    register_table_views,
    truncated_hash,
)

SECRET = "s3cret"


def rows(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"user-{i}".encode(), orjson.dumps({"n": i})) for i in range(n)]


def test_a_key_of_user_data_is_shown_as_a_truncated_hash() -> None:
    shown = display_key(b"user-1@example.com", SECRET, safe=False)
    assert shown.startswith("h:") and len(shown) == 18
    assert "user" not in shown


def test_a_key_of_account_data_is_shown_as_it_is() -> None:
    assert display_key(b'["549755885175","2026-12-01"]', SECRET, safe=True).startswith('["5497')


def test_the_hash_depends_on_the_key() -> None:
    assert truncated_hash("u-1", SECRET) != truncated_hash("u-1", "other")


def test_strings_outside_safe_fields_are_hashed() -> None:
    value = {
        "user_id": "u-17",
        "ids": {"em": ["a" * 64], "click_id": "epik-1"},
        "ad_account_id": "549755885175",
        "status": "attributed",
        "event_time": 1764151000,
    }
    shown = redact(value, SECRET)
    assert shown["ad_account_id"] == "549755885175"
    assert shown["status"] == "attributed"
    assert shown["event_time"] == 1764151000
    assert shown["user_id"].startswith("h:")
    assert shown["ids"]["em"][0].startswith("h:")
    assert shown["ids"]["click_id"].startswith("h:")


def test_dict_keys_that_are_data_are_hashed() -> None:
    shown = redact({"members": {"549755885175:checkout:ev-1:online": [1, True]}}, SECRET)
    (member,) = shown["members"]
    assert member.startswith("h:")


def test_a_report_rows_sums_show_their_currencies_and_decimal_totals() -> None:
    """The operator sees a row's totals: currency codes and decimal sums are not user data."""
    shown = redact({"conversions": 3, "sums": {"USD": [2, "25.50"], "EUR": [1, "-0.5"]}}, SECRET)
    assert shown["sums"] == {"USD": [2, "25.50"], "EUR": [1, "-0.5"]}


def test_anything_else_in_a_map_of_sums_is_hashed() -> None:
    """Only a currency code is shown as a key there, and only a decimal number as a sum."""
    shown = redact({"sums": {"USD": [1, "u-17@example.com"], "u-17": [1, "3"]}}, SECRET)
    assert shown["sums"]["USD"][1].startswith("h:")
    (other,) = (k for k in shown["sums"] if k != "USD")
    assert other.startswith("h:")
    assert shown["sums"][other][1].startswith("h:")


FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
CURRENCY = re.compile(r"[A-Z]{3}")
DECIMAL = re.compile(r"-?[0-9]{1,60}(\.[0-9]{1,60})?")


@given(st.recursive(st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_no_string_outside_safe_fields_survives(value: object) -> None:
    """Every string shown is a hash, a field-name-like key, or the value of a safe field."""

    def unhashed(v: object, field: str | None) -> list[str]:
        if isinstance(v, str):
            if field == "sum" and DECIMAL.fullmatch(v):
                return []
            return [] if v.startswith("h:") or field in SAFE_FIELDS else [v]
        if isinstance(v, list):
            return [s for x in v for s in unhashed(x, field)]
        if isinstance(v, dict) and field == "sums":
            keys = [k for k in v if not (k.startswith("h:") or CURRENCY.fullmatch(k))]
            code = CURRENCY.fullmatch
            return keys + [s for k, x in v.items() for s in unhashed(x, "sum" if code(k) else None)]
        if isinstance(v, dict):
            keys = [k for k in v if not (k.startswith("h:") or FIELD_NAME.fullmatch(k))]
            return keys + [s for k, x in v.items() for s in unhashed(x, k)]
        return []

    assert unhashed(redact({"user_id": value}, SECRET), None) == []
    assert unhashed(redact({"sums": value}, SECRET), None) == []


def test_pages_cover_every_row_once_in_order() -> None:
    seen: list[str] = []
    after = None
    while True:
        got = page(rows(23), PageQuery(limit=5, after=after), SECRET, safe_keys=False)
        seen += [row["key"] for row in got["rows"]]
        after = got["next"]
        if after is None:
            break
    assert len(seen) == 23 and seen == sorted(set(seen))


def test_the_last_page_has_no_next() -> None:
    got = page(rows(3), PageQuery(limit=3), SECRET, safe_keys=False)
    assert len(got["rows"]) == 3 and got["next"] is None


def test_limit_defaults_and_bounds() -> None:
    assert parse_page_query({}).limit == 50
    assert parse_page_query({"limit": "7", "after": "h:00"}) == PageQuery(7, "h:00")
    for bad in ("0", str(MAX_LIMIT + 1), "x"):
        with pytest.raises(PageError):
            parse_page_query({"limit": bad})


def test_a_key_is_routed_to_the_worker_holding_its_partition() -> None:
    assignment = {"http://127.0.0.1:6120": [0, 2], "http://127.0.0.1:6121": [1, 3]}
    assert owner_of(3, assignment) == "http://127.0.0.1:6121"
    assert owner_of(2, assignment) == "http://127.0.0.1:6120"
    assert owner_of(9, assignment) is None


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
    app = create_app(settings)
    app.Table("seen", key_type=bytes, value_type=bytes, partitions=8)
    register_table_views(app, settings, "seen")
    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "path", ["/tables/seen", "/tables/seen/lookup?key=k", "/partitions", "/metrics"]
)
async def test_operator_views_need_the_token(client: TestClient, path: str) -> None:
    assert (await client.get(path)).status == 401


async def test_metrics_answer_with_the_token(client: TestClient) -> None:
    token = Settings(dev_mode=True).active_operator_token
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert "convmesh_rocksdb_disk_bytes" in await response.text()


async def test_a_lookup_is_routed_by_the_partition_key_the_table_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher's key is routed by its identifier, the key its partition was chosen by."""
    settings = Settings(service="identity_match", data_dir=tmp_path, web_port=6198, dev_mode=True)
    app = create_app(settings)
    app.Table("watchers", key_type=bytes, value_type=bytes, partitions=8)
    first_field = {"watchers": lambda key: key.split("|", 1)[0]}
    register_table_views(app, settings, "watchers", partition_keys=first_field)
    asked: list[str] = []

    async def route_req(table: str, key: str, web: object, request: object) -> object:
        asked.append(key)
        raise SameNode()  # this worker holds it: answered here

    monkeypatch.setattr(app.router, "route_req", route_req)
    app.web.init_server()
    token = settings.active_operator_token
    async with TestClient(TestServer(app.web.web_app)) as client:
        response = await client.get(
            "/tables/watchers/lookup",
            params={"key": "e" * 64 + "|acct:c:ev-1:web|0"},
            headers={"Authorization": f"Bearer {token}"},
        )
        body = await response.json()
    assert asked == ["e" * 64]
    assert response.status == 404 and body["found"] is False
    assert body["partition"] == partition_of(("e" * 64).encode(), 8)
