"""The aggregate agents' steps, run in-process (tests/support/harness.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.aggregate.agents import (
    RESULTS_OUTPUTS,
    ROWS_OUTPUTS,
    ResultsHandler,
    RowsHandler,
)
from tests.support.harness import Harness

ACCOUNT = "549755885175"
KEY = f"{ACCOUNT}:checkout:ev-1:online"
T = 1_764_151_000  # 2025-11-26 UTC


def attributed(version: int, ad: str = "a1", value: float | None = 10.0) -> dict[str, Any]:
    return {
        "conversion_key": KEY,
        "ad_account_id": ACCOUNT,
        "event_id": "ev-1",
        "event_name": "checkout",
        "action_source": "web",
        "source": "api",
        "event_time": T,
        "value": value,
        "currency": "USD",
        "status": "attributed",
        "unidentified_reason": None,
        "match": {"key_type": "em", "user": "p-1"},
        "touch": {
            "engagement_id": "e1",
            "campaign_id": "c1",
            "ad_group_id": "g1",
            "ad_id": ad,
            "type": "click",
            "ts_ms": 0,
        },
        "version": version,
        "processed_at_ms": 0,
    }


@pytest.fixture
def h() -> Harness:
    return Harness()


async def count(h: Harness, *records: dict[str, Any] | None) -> None:
    """Run the results step over attributed records, then the rows step over its deltas."""
    results = ResultsHandler(h.settings, h.outbox(*RESULTS_OUTPUTS), h.log)
    before = len(h.sent("reports.deltas"))
    events = [h.record("conversions.attributed", KEY, r) for r in records]
    await h.run(results, events, h.table("results"))
    deltas = h.sent("reports.deltas")[before:]
    rows = RowsHandler(h.settings, h.outbox(*ROWS_OUTPUTS), h.log)
    await h.run(
        rows,
        [h.record("reports.deltas", d.key, d.value) for d in deltas],
        h.table("rows"),
        after_batch=rows.publish_changed,
    )


def ad_of(row_key: bytes) -> str:
    return str(row_key.decode().split(",")[3].strip('"'))


async def test_a_new_version_retracts_the_old_row_and_adds_the_new(h: Harness) -> None:
    await count(h, attributed(1, ad="a1"))
    await count(h, attributed(2, ad="a2"))
    published = h.sent("reports.conversions")
    assert [(ad_of(p.key), p.json and p.json["conversions"]) for p in published] == [
        ("a1", 1),
        ("a1", None),  # the old row emptied: a tombstone
        ("a2", 1),
    ]
    assert h.table("results").value(KEY)["version"] == 2


async def test_deltas_are_keyed_by_ad_account(h: Harness) -> None:
    await count(h, attributed(1))
    assert {d.key for d in h.sent("reports.deltas")} == {ACCOUNT.encode()}


async def test_a_tombstone_of_conversions_attributed_is_ignored(h: Harness) -> None:
    await count(h, None)
    assert h.sent("reports.deltas") == [] and h.dead_letters() == []


async def test_a_stale_version_sends_nothing(h: Harness) -> None:
    await count(h, attributed(2))
    await count(h, attributed(1))
    assert len(h.sent("reports.deltas")) == 1


async def test_an_undecodable_record_is_dead_lettered_and_the_batch_goes_on(h: Harness) -> None:
    results = ResultsHandler(h.settings, h.outbox(*RESULTS_OUTPUTS), h.log)
    events = [
        h.record("conversions.attributed", KEY, b"not json"),
        h.record("conversions.attributed", KEY, attributed(1)),
    ]
    await h.run(results, events, h.table("results"))
    [dead] = h.dead_letters()
    assert dead["reason"] == "processing_error" and dead["offset"] == 0
    assert len(h.sent("reports.deltas")) == 1


async def test_a_row_is_published_once_per_batch(h: Harness) -> None:
    """Many deltas of one row in a batch: one reports.conversions record, the last state."""
    await count(h, attributed(1, value=1.0), attributed(2, value=2.0), attributed(3, value=3.0))
    [published] = h.sent("reports.conversions")
    assert published.json["conversions"] == 1 and published.json["value"] == {"USD": 3.0}
