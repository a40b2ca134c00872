"""The ingest agent's step, run in-process over the house loop (tests/support/harness.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from services.ingest.agents import OUTPUTS, IngestHandler
from services.ingest.stats import IngestStats
from tests.support.harness import FakeEvent, Harness

ACCOUNT = "549755885175"
H1 = "a" * 64
EMAIL = "dave@example.net"
TS = 1_764_151_200.0  # the harness's record timestamp


def envelope(event_id: str, em: str = H1, event_time: int = 1_764_151_000) -> bytes:
    return orjson.dumps(
        {
            "ad_account_id": ACCOUNT,
            "source": "tag",
            "event": {
                "event_name": "lead",
                "action_source": "web",
                "event_time": event_time,
                "event_id": event_id,
                "user_data": {"em": [em]},
            },
        }
    )


class RecordingLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.entries.append({"event": event, **fields})

    error = info = warning


@pytest.fixture
def h() -> Harness:
    return Harness()


def raw(h: Harness, key: bytes | str | None, value: bytes | None) -> FakeEvent:
    return h.record("conversions.raw", key, value)


async def run(
    h: Harness, *events: FakeEvent, stats: IngestStats | None = None, log: Any = None
) -> IngestStats:
    stats = stats or IngestStats()
    handler = IngestHandler(h.settings, h.outbox(*OUTPUTS), log or h.log, stats)
    await h.run(handler, list(events), user_keyed=True)
    return stats


async def test_outcomes_are_sent_in_input_order(h: Harness) -> None:
    await run(
        h,
        raw(h, ACCOUNT, envelope("a")),
        raw(h, "x", b"junk"),
        raw(h, None, None),
        raw(h, ACCOUNT, envelope("b")),
    )
    outcomes = [s.topic for s in h.producer.sent if s.topic != "diagnostics.facts"]
    assert outcomes == [
        "conversions.valid",
        "conversions.dlq",
        "conversions.dlq",
        "conversions.valid",
    ]
    assert [s.json["event_id"] for s in h.sent("conversions.valid")] == ["a", "b"]


async def test_each_valid_conversion_sends_its_diagnostics_fact_keyed_by_account(
    h: Harness,
) -> None:
    """aggregate counts the setup diagnostics from these facts, not from conversions.valid."""
    await run(h, raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, b"junk"))
    [valid] = h.sent("conversions.valid")
    [fact] = h.sent("diagnostics.facts")
    assert fact.key == ACCOUNT.encode()
    assert fact.json["kind"] == "valid"
    assert fact.json["ref"] == valid.json["raw_ref"]
    assert fact.json["conversion_key"] == valid.json["conversion_key"]
    assert fact.json["ids"] == ["em"]


async def test_a_diagnostics_fact_carries_no_identifier_value(h: Harness) -> None:
    await run(h, raw(h, ACCOUNT, envelope("a")))
    [fact] = h.sent("diagnostics.facts")
    assert H1 not in fact.value.decode()


async def test_valid_is_keyed_by_conversion_key_and_a_reject_by_ad_account(h: Harness) -> None:
    await run(h, raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, b"junk"))
    [valid] = h.sent("conversions.valid")
    [dead] = h.sent("conversions.dlq")
    assert valid.key == f"{ACCOUNT}:lead:a:online".encode()
    assert dead.key == ACCOUNT.encode()


async def test_valid_message_refers_to_its_raw_record(h: Harness) -> None:
    await run(h, raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, envelope("b")))
    refs = [s.json["raw_ref"] for s in h.sent("conversions.valid")]
    topic = h.settings.topic_name("conversions.raw")
    assert refs == [f"{topic}:0:0", f"{topic}:0:1"]


async def test_the_kafka_timestamp_stands_in_for_a_missing_received_at(h: Harness) -> None:
    await run(h, raw(h, ACCOUNT, envelope("a")))
    [valid] = h.sent("conversions.valid")
    assert valid.json["received_at_ms"] == int(TS * 1000)


async def test_a_reject_is_dead_lettered_with_its_reason_and_place(h: Harness) -> None:
    await run(h, raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, envelope("b", em=EMAIL)))
    [dead] = h.dead_letters()
    assert dead["reason"] == "unhashed_identifier"
    assert (dead["source_topic"], dead["partition"], dead["offset"]) == (
        h.settings.topic_name("conversions.raw"),
        0,
        1,
    )
    assert dead["ad_account_id"] == ACCOUNT
    assert EMAIL not in dead["raw"]


async def test_counts_per_source_add_up(h: Harness) -> None:
    """received = valid + rejected, per source; unknown when the envelope says none."""
    stats = await run(
        h,
        raw(h, ACCOUNT, envelope("a")),
        raw(h, ACCOUNT, envelope("b", em=EMAIL)),
        raw(h, None, b"junk"),
    )
    snapshot = stats.snapshot()
    assert snapshot["by_source"]["tag"] == {"received": 2, "valid": 1, "rejected": 1}
    assert snapshot["by_source"]["unknown"] == {"received": 1, "valid": 0, "rejected": 1}
    assert snapshot["rejected_by_reason"] == {"invalid_json": 1, "unhashed_identifier": 1}


async def test_rejects_are_logged_with_message_fields_and_without_plaintext(h: Harness) -> None:
    log = RecordingLog()
    await run(h, raw(h, ACCOUNT, envelope("b", em=EMAIL)), raw(h, EMAIL, b"junk"), log=log)
    rejected = [entry for entry in log.entries if entry["event"] == "ingest_rejected"]
    assert [(e["reason"], e["offset"], e["partition"]) for e in rejected] == [
        ("unhashed_identifier", 0, 0),
        ("invalid_json", 1, 0),
    ]
    assert rejected[0]["key"] == ACCOUNT
    assert rejected[1]["key"] == "[redacted]"  # a key that is not the ad account id
    assert rejected[0]["topic"] == h.settings.topic_name("conversions.raw")
    assert EMAIL not in repr(log.entries)


async def test_a_batch_whose_sends_fail_is_sent_again_and_nothing_is_lost(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.runtime.pipeline.RETRY_FIRST_S", 0.0)
    h.producer.fail_next = 1
    await run(h, raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, envelope("b")))
    ids = [s.json["event_id"] for s in h.sent("conversions.valid")]
    assert ids[-2:] == ["a", "b"]  # the whole batch again, in order


async def test_a_batch_that_does_not_finish_never_gets_its_offsets_committed(
    h: Harness,
) -> None:
    events = [raw(h, ACCOUNT, envelope("a")), raw(h, ACCOUNT, envelope("b"))]

    async def cancelled() -> Any:
        raise asyncio.CancelledError

    outbox = h.outbox(*OUTPUTS)
    outbox._app.maybe_start_producer = cancelled  # type: ignore[attr-defined]
    handler = IngestHandler(h.settings, outbox, h.log, IngestStats())
    with pytest.raises(asyncio.CancelledError):
        await h.run(handler, events)
    assert all(event.message.acked for event in events)  # marked: skipped by commits
    assert all(event.message.refcount > 0 for event in events)  # never released


async def test_a_finished_batch_is_acked_once_its_sends_are_acknowledged(h: Harness) -> None:
    events = [raw(h, ACCOUNT, envelope("a"))]
    await run(h, *events)
    assert events[0].message.acked is True and events[0].message.refcount == 0


async def test_a_fact_that_cannot_be_built_leaves_its_conversion_unsent_and_dead_lettered_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never both valid and rejected: received = accepted + duplicates + rejected holds."""

    def broken(conv: Any) -> Any:
        raise KeyError("raw_ref")

    monkeypatch.setattr("services.ingest.rules.send_of_valid", broken)
    await run(h, raw(h, ACCOUNT, envelope("a")))
    assert h.sent("conversions.valid") == [] and h.sent("diagnostics.facts") == []
    assert [d["reason"] for d in h.dead_letters()] == ["processing_error"]
