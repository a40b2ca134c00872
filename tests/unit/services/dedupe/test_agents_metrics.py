"""The dedupe agent's metric: a duplicate is counted once, a redelivery never."""

from __future__ import annotations

from services.dedupe.agents import OUTPUTS, DedupeHandler
from tests.support.harness import Harness
from tests.unit.services.dedupe.test_agents import KEY, valid


async def duplicates_counted(*raw_refs: str) -> float:
    h = Harness()
    handler = DedupeHandler(h.settings, h.outbox(*OUTPUTS), h.log)
    events = [h.record("conversions.valid", KEY, valid(ref)) for ref in raw_refs]
    await h.run(handler, events, h.table("seen"))
    value = handler.outbox.metrics.registry.get_sample_value("convmesh_duplicates_total")
    return value or 0.0


async def test_a_duplicate_is_counted() -> None:
    assert await duplicates_counted("raw:0:1", "raw:0:2") == 1


async def test_a_redelivered_input_is_not_a_duplicate() -> None:
    assert await duplicates_counted("raw:0:1", "raw:0:1") == 0
