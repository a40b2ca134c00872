"""The diagnostics agents' steps, run in-process (tests/support/harness.py)."""

from __future__ import annotations

import pytest

from services.aggregate.diagnostics_agent import FACT_INPUTS, FACTS, BucketsHandler, FactsHandler
from shared.contract.diagnostic_facts import fact_of_valid
from tests.support.conversions import ACCOUNT, KEY, valid_conversion
from tests.support.harness import Harness

VALID = valid_conversion()


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_conversions_valid_is_not_read_ingest_sends_its_facts() -> None:
    """The largest records of the conversions' path, read only to make a fact: ingest
    sends the fact with the record (tests/unit/services/ingest/test_agents.py)."""
    assert "conversions.valid" not in FACT_INPUTS


async def test_duplicate_becomes_a_fact_keyed_by_account(h: Harness) -> None:
    handler = FactsHandler(h.settings, h.outbox(FACTS), h.log)
    audit = {"raw_ref": "conversions.raw:0:2", "ad_account_id": ACCOUNT, "conversion_key": KEY}
    await h.run(handler, [h.record("conversions.duplicates", KEY, audit)])
    [fact] = h.sent(FACTS)
    assert fact.key == ACCOUNT.encode() and fact.json["kind"] == "duplicate"


async def test_dead_letter_of_a_downstream_topic_is_not_a_rejected_input(h: Harness) -> None:
    handler = FactsHandler(h.settings, h.outbox(FACTS), h.log)
    dead = {
        "reason": "processing_error",
        "source_topic": "conversions.valid",
        "ad_account_id": ACCOUNT,
    }
    await h.run(handler, [h.record("conversions.dlq", ACCOUNT, dead)])
    assert h.sent(FACTS) == []


async def test_fact_is_counted_in_its_day_bucket_once(h: Harness) -> None:
    fact = fact_of_valid(VALID)
    buckets = BucketsHandler(h.settings, h.outbox(), h.log)
    again = [h.record(FACTS, ACCOUNT, fact), h.record(FACTS, ACCOUNT, fact)]
    await h.run(buckets, again, h.table("diagnostics"))
    bucket = h.table("diagnostics").value(f"{ACCOUNT}:2025-11-26")
    assert bucket["cells"]["api|checkout"]["valid"] == 1


async def test_a_new_day_deletes_the_day_past_every_window(h: Harness) -> None:
    old = {**VALID, "received_at_ms": VALID["received_at_ms"] - 30 * 86_400_000}
    old["event_time"] = old["received_at_ms"] // 1000
    table = h.table("diagnostics")
    buckets = BucketsHandler(h.settings, h.outbox(), h.log)
    await h.run(buckets, [h.record(FACTS, ACCOUNT, fact_of_valid(old))], table)
    assert table.value(f"{ACCOUNT}:2025-10-27") is not None
    await h.run(buckets, [h.record(FACTS, ACCOUNT, fact_of_valid(VALID))], table)
    assert table.value(f"{ACCOUNT}:2025-10-27") is None
    assert [k for k, _ in table.items() if k.startswith(f"{ACCOUNT}/2025-10-27/".encode())] == []


async def test_an_unreadable_input_is_skipped_not_dead_lettered(h: Harness) -> None:
    """A DLQ record would count as one more reject of the pipeline."""
    handler = FactsHandler(h.settings, h.outbox(FACTS), h.log)
    audit = {"raw_ref": "conversions.raw:0:2", "ad_account_id": ACCOUNT, "conversion_key": KEY}
    broken = {k: v for k, v in audit.items() if k != "raw_ref"}
    await h.run(
        handler,
        [
            h.record("conversions.duplicates", KEY, broken),
            h.record("conversions.duplicates", KEY, audit),
        ],
    )
    assert h.dead_letters() == [] and len(h.sent(FACTS)) == 1
