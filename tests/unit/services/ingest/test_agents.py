"""services.ingest.agents: batch routing and publishing, with fake messages and producer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from services.ingest import agents
from services.ingest.stats import IngestStats
from shared.runtime.settings import Settings

ACCOUNT = "549755885175"
H1 = "a" * 64
EMAIL = "dave@example.net"
TS = 1_764_151_200.0


@dataclass
class FakeMessage:
    key: bytes | None
    value: bytes | None
    topic: str = "conversions.raw"
    partition: int = 0
    offset: int = 0
    timestamp: float = TS
    acked: bool = False


@dataclass
class FakeEvent:
    message: FakeMessage


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


def batch(*values: tuple[bytes | None, bytes | None]) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(k, val, offset=i)) for i, (k, val) in enumerate(values)]


def route(events: list[FakeEvent], stats: IngestStats | None = None) -> list[agents.Send]:
    return agents.route_batch(events, Settings(), stats or IngestStats(), "valid", "dlq")


class FakeProducer:
    """Records sends; fails the sends whose position is in ``fail_at`` once."""

    def __init__(self, fail_at: set[int] | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.fail_at = fail_at or set()
        self.calls = 0

    async def send(self, topic: str, key: Any, value: Any, *_: Any) -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        position = self.calls
        self.calls += 1
        if position in self.fail_at:
            future.set_exception(RuntimeError("broker said no"))
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future


def test_route_batch_keeps_input_order():
    sends = route(
        batch(
            (ACCOUNT.encode(), envelope("a")),
            (b"x", b"junk"),
            (None, None),
            (ACCOUNT.encode(), envelope("b")),
        )
    )
    assert [topic for topic, _, _ in sends] == ["valid", "dlq", "dlq", "valid"]
    assert orjson.loads(sends[3][2])["event_id"] == "b"


def test_route_batch_keys_valid_by_conversion_key_and_dlq_by_account():
    sends = route(batch((ACCOUNT.encode(), envelope("a")), (ACCOUNT.encode(), b"junk")))
    assert sends[0][1] == f"{ACCOUNT}:lead:a:online".encode()
    assert sends[1][1] == ACCOUNT.encode()


def test_route_batch_uses_the_kafka_timestamp_when_received_at_is_missing():
    sends = route(batch((ACCOUNT.encode(), envelope("a"))))
    assert orjson.loads(sends[0][2])["received_at_ms"] == int(TS * 1000)


def test_route_batch_counts_per_source():
    stats = IngestStats()
    route(
        batch(
            (ACCOUNT.encode(), envelope("a")),
            (ACCOUNT.encode(), envelope("b", em=EMAIL)),
            (None, b"junk"),
        ),
        stats,
    )
    snapshot = stats.snapshot()
    assert snapshot["by_source"]["tag"] == {"received": 2, "valid": 1, "rejected": 1}
    assert snapshot["by_source"]["unknown"] == {"received": 1, "valid": 0, "rejected": 1}
    assert snapshot["rejected_by_reason"] == {"invalid_json": 1, "unhashed_identifier": 1}


class RecordingLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.entries.append({"event": event, **fields})

    error = info = warning


def test_rejects_are_logged_with_message_fields_and_without_plaintext(
    monkeypatch: pytest.MonkeyPatch,
):
    recorder = RecordingLog()
    monkeypatch.setattr(agents, "log", recorder)
    route(batch((ACCOUNT.encode(), envelope("b", em=EMAIL)), (EMAIL.encode(), b"junk")))
    logs = recorder.entries
    rejected = [entry for entry in logs if entry["event"] == "ingest_rejected"]
    assert [(e["reason"], e["offset"], e["partition"]) for e in rejected] == [
        ("unhashed_identifier", 0, 0),
        ("invalid_json", 1, 0),
    ]
    assert rejected[0]["key"] == ACCOUNT
    assert rejected[1]["key"] == "[redacted]"
    assert rejected[0]["topic"] == "conversions.raw"
    assert EMAIL not in repr(logs)


async def test_publish_sends_everything_in_order():
    producer = FakeProducer()
    sends = [("valid", b"k", b"1"), ("dlq", None, b"2"), ("valid", b"k", b"3")]
    await agents.publish(producer, sends)
    assert producer.sent == sends


async def test_publish_retries_from_the_first_failure_in_order(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(agents, "RETRY_BACKOFF_S", (0.0,))
    producer = FakeProducer(fail_at={1})
    sends = [("valid", b"k", b"1"), ("valid", b"k", b"2"), ("valid", b"k", b"3")]
    await agents.publish(producer, sends)
    # 1 ok, 2 failed, 3 ok; then 2 and 3 again, in order.
    assert [v for _, _, v in producer.sent] == [b"1", b"3", b"2", b"3"]


async def test_publish_retries_when_queueing_itself_fails(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(agents, "RETRY_BACKOFF_S", (0.0,))

    class Flaky(FakeProducer):
        async def send(self, topic: str, key: Any, value: Any, *rest: Any) -> asyncio.Future:
            if self.calls == 0:
                self.calls += 1
                raise RuntimeError("buffer full")
            return await super().send(topic, key, value, *rest)

    producer = Flaky()
    await agents.publish(producer, [("valid", b"k", b"1")])
    assert [v for _, _, v in producer.sent] == [b"1"]


async def test_a_published_batch_is_left_for_take_events_to_ack():
    events = batch((ACCOUNT.encode(), envelope("a")))
    producer = FakeProducer()

    async def get_producer() -> FakeProducer:
        return producer

    await agents.process_batch(events, Settings(), IngestStats(), "valid", "dlq", get_producer)
    assert len(producer.sent) == 1
    assert events[0].message.acked is False


async def test_an_unfinished_batch_never_gets_its_offsets_committed():
    events = batch((ACCOUNT.encode(), envelope("a")), (ACCOUNT.encode(), envelope("b")))

    async def cancelled() -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await agents.process_batch(events, Settings(), IngestStats(), "valid", "dlq", cancelled)
    assert all(event.message.acked for event in events)
