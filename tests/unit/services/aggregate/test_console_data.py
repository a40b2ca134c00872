"""services.aggregate.console_data: lanes per account and date, pipeline sums."""

from __future__ import annotations

import orjson

from services.aggregate.console_data import lanes_of, merge_lanes, parse_samples, pipeline_of
from shared.runtime.metrics import Metrics


def row(account: str, date: str, members: int) -> tuple[bytes, bytes]:
    key = orjson.dumps([account, "c1", "g1", "a1", "checkout", "click", date])
    value = {"members": {f"{account}:e:{i}:online": [1, True, 1.0, "USD"] for i in range(members)}}
    return key, orjson.dumps({**value, "version": 1})


def test_observed_lane_counts_present_members_per_account_and_date() -> None:
    found = lanes_of([row("1", "2026-12-01", 3), row("1", "2026-12-01", 2)], [], [], k=10)
    assert found["1"]["2026-12-01"]["observed"] == 5
    assert found["1"]["2026-12-01"]["protected"] == 0


def test_workers_lanes_add_up() -> None:
    a = {"1": {"d": {"observed": 1.0, "modeled": 0.0, "protected": 2.0}}}
    b = {"1": {"d": {"observed": 3.0, "modeled": 1.0, "protected": 0.0}}}
    assert merge_lanes([a, b]) == {"1": {"d": {"observed": 4.0, "modeled": 1.0, "protected": 2.0}}}


def test_pipeline_sums_the_workers_of_a_service() -> None:
    first, second = Metrics(), Metrics()
    first.record_in("conversions.raw")
    second.record_in("conversions.raw")
    second.reject("not_json", "conversions.raw")
    samples = [parse_samples(m.exposition().decode()) for m in (first, second)]
    (ingest,) = pipeline_of({"ingest": samples})["services"]
    assert ingest["workers"] == 2
    assert ingest["records_in"] == {"conversions.raw": 2}
    assert ingest["rejects"] == {"not_json": 1}
