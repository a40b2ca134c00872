"""Run a service's agent step in-process, without a broker.

The real batching loop (``shared.runtime.batching.process``: per-batch state
cache, failure policy, dead letters, outputs before state) runs over fake
Kafka messages, a fake producer and dict-backed tables. A test builds an
agent's handler with a real ``Outbox`` (from ``harness.outbox(...)``), feeds
it records, and reads back what was sent and what the tables hold:

    h = Harness(settings)
    handler = DedupeHandler(settings, h.outbox(*OUTPUTS), h.log)
    await h.run(handler, [h.record("conversions.valid", key, value)], seen=h.table("seen"))
    assert h.sent("conversions.accepted") == [...]
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from shared.runtime.batching import Outbox, process
from shared.runtime.settings import Settings


@dataclass
class FakeMessage:
    """The fields of a Faust message that our code reads."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    timestamp: float = 1_764_151_200.0
    acked: bool = False
    #: References held on the message; Faust's stream holds one while it is delivered.
    refcount: int = 1

    def incref(self) -> None:
        self.refcount += 1


@dataclass
class FakeEvent:
    message: FakeMessage

    def ack(self) -> None:
        """Drop a reference; the last one marks the offset committable, as Faust's does."""
        if self.message.acked:
            return
        self.message.refcount = max(self.message.refcount - 1, 0)
        if self.message.refcount == 0:
            self.message.acked = True


@dataclass
class Sent:
    """One record the producer was given (topic is the registry name)."""

    topic: str
    key: bytes | None
    value: bytes | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.value) if self.value is not None else None


class FakeTable:
    """A raw-bytes table: the mapping a Faust table offers, in a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        # A tombstone of a key the store lacks is no error (RocksDB's delete).
        self.data.pop(key, None)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return self.data.items()

    def value(self, key: bytes | str) -> Any:
        """The decoded JSON value of ``key`` (None when absent)."""
        raw = self.data.get(key.encode() if isinstance(key, str) else key)
        return orjson.loads(raw) if raw is not None else None


class FakeProducer:
    """Records sends (acknowledged at once); ``fail_next`` makes sends fail."""

    def __init__(self, real_names: dict[str, str]) -> None:
        self.sent: list[Sent] = []
        self.fail_next = 0
        self._registry_name = {real: name for name, real in real_names.items()}

    async def send_many(
        self, records: list[tuple[str, Any, Any, Any]]
    ) -> list[asyncio.Future[None]]:
        """What ``Outbox.drain`` hands a producer: a batch's records, in order."""
        return [await self.send(topic, key, value) for topic, _, key, value in records]

    async def send(self, topic: str, key: Any, value: Any, *_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_next:
            self.fail_next -= 1
            future.set_exception(RuntimeError("broker said no"))
        else:
            self.sent.append(Sent(self._registry_name.get(topic, topic), key, value))
            future.set_result(None)
        return future


class FakeApp:
    """What ``Outbox`` needs of a Faust app: a producer."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    async def maybe_start_producer(self) -> FakeProducer:
        return self.producer


class FakeStream:
    """``take_events`` over fixed batches of events, acking each batch after it is handed
    back (Faust's does so in a ``finally``, also when the agent was cancelled)."""

    def __init__(self, batches: list[list[FakeEvent]]) -> None:
        self.batches = batches
        self.windows: list[float] = []  # the batch window each take_events was asked for
        self.per_fetch: list[bool] = []  # whether each take was to end with its fetch

    async def take_events(
        self, _n: int, within: float, *, per_fetch: bool = True, gap_s: float = 0.0
    ) -> AsyncIterator[list[FakeEvent]]:
        self.windows.append(within)
        self.per_fetch.append(per_fetch)
        for batch in self.batches:
            try:
                yield batch
            finally:
                for event in batch:
                    event.ack()


@dataclass
class Harness:
    """One in-process run of agent handlers: shared producer, tables and log."""

    settings: Settings = field(default_factory=lambda: Settings(dev_mode=True))
    tables: dict[str, FakeTable] = field(default_factory=dict)
    log: Any = field(default_factory=lambda: structlog.get_logger("harness"))

    def __post_init__(self) -> None:
        self.producer = FakeProducer({})
        self._offsets: dict[tuple[str, int], int] = {}

    def outbox(self, *names: str) -> Outbox:
        box = Outbox(FakeApp(self.producer), self.settings, *names)
        self.producer._registry_name.update(
            {self.settings.topic_name(n): n for n in (*names, "conversions.dlq")}
        )
        return box

    def table(self, name: str) -> FakeTable:
        return self.tables.setdefault(name, FakeTable())

    def record(
        self, topic: str, key: bytes | str | None, value: Any, *, partition: int = 0
    ) -> FakeEvent:
        """An input record of registry topic ``topic``; dicts are JSON-encoded.

        Offsets count up per (topic, partition), as Kafka's would.
        """
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        raw_key = key.encode() if isinstance(key, str) else key
        raw_value = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        message = FakeMessage(
            self.settings.topic_name(topic), raw_key, raw_value, partition, offset
        )
        return FakeEvent(message)

    async def run(
        self,
        handler: Callable[..., Awaitable[None]],
        events: list[FakeEvent],
        *tables: FakeTable,
        batch_size: int | None = None,
        outbox: Outbox | None = None,
        user_keyed: bool = False,
        after_batch: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        """Run ``handler`` over ``events`` with the real batching loop."""
        size = batch_size or max(1, len(events))
        batches = [events[i : i + size] for i in range(0, len(events), size)]
        box = outbox if outbox is not None else getattr(handler, "outbox", None)
        if box is None:
            raise ValueError("pass the handler's outbox")
        await process(
            FakeStream(batches),
            self.settings,
            box,
            handler,
            *tables,
            log=self.log,
            user_keyed=user_keyed,
            after_batch=after_batch,
        )

    def sent(self, topic: str) -> list[Sent]:
        """Records sent to registry topic ``topic``, in order."""
        return [s for s in self.producer.sent if s.topic == topic]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [s.json for s in self.sent("conversions.dlq")]
