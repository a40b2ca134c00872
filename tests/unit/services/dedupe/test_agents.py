"""The dedupe agent's step, run in-process (tests/support/harness.py)."""

from __future__ import annotations

import time

import orjson
import pytest

from services.dedupe.agents import OUTPUTS, DedupeHandler, partition_items
from tests.support.harness import Harness

KEY = "549755885175:checkout:ev-1:online"


def valid(raw_ref: str, event_time: int = 1_764_151_000) -> dict[str, object]:
    return {
        "conversion_key": KEY,
        "raw_ref": raw_ref,
        "source": "api",
        "ad_account_id": "549755885175",
        "event_time": event_time,
    }


@pytest.fixture
def h() -> Harness:
    return Harness()


async def run(h: Harness, *events: object) -> None:
    handler = DedupeHandler(h.settings, h.outbox(*OUTPUTS), h.log)
    await h.run(handler, list(events), h.table("seen"))  # type: ignore[arg-type]


async def test_first_event_is_accepted_and_remembered(h: Harness) -> None:
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:1")))
    [accepted] = h.sent("conversions.accepted")
    assert accepted.key == KEY.encode() and accepted.json["raw_ref"] == "raw:0:1"
    assert h.table("seen").value(KEY) == [[1_764_151_000, "raw:0:1"]]


async def test_duplicate_goes_to_the_audit_topic_only(h: Harness) -> None:
    await run(
        h,
        h.record("conversions.valid", KEY, valid("raw:0:1")),
        h.record("conversions.valid", KEY, valid("raw:0:2", 1_764_151_100)),
    )
    assert len(h.sent("conversions.accepted")) == 1
    [audit] = h.sent("conversions.duplicates")
    assert audit.json["original_event_time"] == 1_764_151_000


async def test_redelivered_input_is_forwarded_again(h: Harness) -> None:
    """After a crash a redelivery re-sends: the first send may never have left."""
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:1")))
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:1")))
    assert len(h.sent("conversions.accepted")) == 2
    assert h.sent("conversions.duplicates") == []


async def test_undecodable_record_is_dead_lettered_and_the_batch_goes_on(h: Harness) -> None:
    await run(
        h,
        h.record("conversions.valid", KEY, b"not json"),
        h.record("conversions.valid", KEY, valid("raw:0:2")),
    )
    [dead] = h.dead_letters()
    assert dead["reason"] == "processing_error" and dead["offset"] == 0
    assert len(h.sent("conversions.accepted")) == 1


async def test_expiry_drops_state_no_event_can_reach(h: Harness) -> None:
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:1", event_time=1_000)))
    await run(h, h.record("dedupe.expiry", KEY, orjson.dumps({"op": "expire"})))
    assert h.table("seen").value(KEY) is None


async def test_an_expiry_as_of_a_backfills_time_keeps_its_state(h: Harness) -> None:
    """Events of a year ago, swept as of their own time: their key is still remembered."""
    old = int(time.time()) - 365 * 86_400
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:1", event_time=old)))
    request = orjson.dumps({"op": "expire", "as_of_s": old})
    await run(h, h.record("dedupe.expiry", KEY, request))
    assert h.table("seen").value(KEY) is not None
    await run(h, h.record("conversions.valid", KEY, valid("raw:0:2", event_time=old + 60)))
    assert len(h.sent("conversions.duplicates")) == 1


def test_the_sweep_reads_each_active_partition_apart_without_the_offset_key() -> None:
    """Each partition is swept as of its own time: the stored pairs come grouped."""

    class Store:
        def _dbs_for_actives(self) -> list[dict[bytes, bytes]]:
            return [{b"a": b"1", b"__faust\0offset__": b"9"}, {b"b": b"2"}]

        def _visible_items(self, db: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
            return [(k, v) for k, v in db.items() if k != b"__faust\0offset__"]

    class Table:
        data = Store()

    assert partition_items(Table()) == [[(b"a", b"1")], [(b"b", b"2")]]
    assert partition_items({b"k": b"v"}) == [[(b"k", b"v")]]  # in memory: one group
