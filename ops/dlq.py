"""Recent rejects of conversions.dlq, grouped by reason (for `convmesh dlq`).

Read from ``since`` (the partitions' offsets at that time) to the current
end, one batch at a time; a record counts once per input position
``(source_topic, partition, offset)``, since a redelivered input may be
dead-lettered again. ``raw`` is already redacted by its producer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contract.errors import ConvmeshError
from shared.kafka.client_config import client_kwargs
from shared.kafka.topic_io import partitions_of
from shared.runtime.settings import Settings

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_since_s(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d`` as seconds."""
    found = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not found:
        raise ConvmeshError(f"--since must look like 90s, 15m, 1h or 7d, not {text!r}")
    return int(found[1]) * _UNITS[found[2]]


@dataclass
class ReasonGroup:
    reason: str
    count: int = 0
    accounts: set[str] = field(default_factory=set)
    message: str = ""
    example: str | None = None
    last_ms: int = 0


@dataclass
class Rejects:
    """Reject records grouped by reason, each input position counted once."""

    reason_filter: str | None = None
    groups: dict[str, ReasonGroup] = field(default_factory=dict)
    seen: set[tuple[str, int, int]] = field(default_factory=set)

    def add(self, value: bytes | None, timestamp_ms: int) -> None:
        if value is None:
            return
        doc: dict[str, Any] = orjson.loads(value)
        reason = str(doc.get("reason", "unknown"))
        if self.reason_filter and reason != self.reason_filter:
            return
        position = (
            str(doc.get("source_topic")),
            int(doc.get("partition", -1)),
            int(doc.get("offset", -1)),
        )
        if position in self.seen:
            return
        self.seen.add(position)
        group = self.groups.setdefault(reason, ReasonGroup(reason))
        group.count += 1
        if doc.get("ad_account_id"):
            group.accounts.add(str(doc["ad_account_id"]))
        if timestamp_ms >= group.last_ms:
            group.last_ms = timestamp_ms
            group.message = str(doc.get("message", ""))
            group.example = doc.get("raw")

    def ordered(self) -> list[ReasonGroup]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.reason))


def group_rejects(
    records: Iterable[tuple[bytes | None, int]], reason: str | None = None
) -> Rejects:
    rejects = Rejects(reason)
    for value, timestamp_ms in records:
        rejects.add(value, timestamp_ms)
    return rejects


async def read_rejects(
    settings: Settings, since_ms: int, reason: str | None = None, timeout_s: float = 60.0
) -> Rejects:
    """The rejects dead-lettered at or after ``since_ms``, up to the topic's current end."""
    topic = settings.topic_name("conversions.dlq")
    rejects = Rejects(reason)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        if not tps:
            return rejects
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        remaining = set()
        for tp in tps:
            found = starts.get(tp)
            if found is not None and found.offset < ends[tp]:
                consumer.seek(tp, found.offset)
                remaining.add(tp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining and loop.time() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5_000)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        rejects.add(m.value, m.timestamp)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return rejects
    finally:
        await consumer.stop()
