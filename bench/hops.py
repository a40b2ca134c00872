"""Where a conversion's latency goes: the time between the stages of its critical path.

After a push, every topic a conversion crosses on its way to ``conversions.attributed``
and ``reports.deltas`` is read back with its CreateTime stamps. Per conversion, each
topic's first record is a stage it reached; the time since the stage before it (or
since ``received_at_ms`` for the first) is what that hop cost: the batch window it
waited in, its processing, and its broker round trips. Conversions that skip a stage
(unidentified ones never reach ``attribution.assignments``) count the time since the
last stage they did reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from bench import figures
from shared.kafka.topic_io import Read, read_all
from shared.runtime.settings import Settings

#: The topics a matched conversion crosses, in order, with the service that writes each.
CRITICAL_PATH: tuple[tuple[str, str], ...] = (
    ("conversions.valid", "ingest"),
    ("conversions.accepted", "dedupe"),
    ("identity.lookups", "identity_match (owner)"),
    ("identity.answers", "identity_match (keys)"),
    ("attribution.assignments", "identity_match (owner)"),
    ("attribution.results", "attribute (users)"),
    ("conversions.attributed", "attribute (publisher)"),
    ("reports.deltas", "attribute (publisher)"),
)


def conversion_key_of(read: Read) -> str | None:
    """The conversion a record belongs to: its value's ``conversion_key`` where it has
    one (lookups, assignments, deltas), else its key (topics keyed by conversion)."""
    try:
        value = orjson.loads(read.value) if read.value else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("conversion_key"), str):
        return value["conversion_key"]
    return read.key.decode() if read.key else None


def first_stamps(reads: Iterable[Read], wanted: Mapping[str, int]) -> dict[str, int]:
    """The earliest CreateTime of each wanted conversion on one topic."""
    first: dict[str, int] = {}
    for read in reads:
        key = conversion_key_of(read)
        if key in wanted and (key not in first or read.timestamp_ms < first[key]):
            first[key] = read.timestamp_ms
    return first


def hop_latencies(
    started_ms: Mapping[str, int], stages: Sequence[Mapping[str, int]]
) -> list[list[float]]:
    """Per stage, the milliseconds each conversion took from the stage before it that
    it reached (``started_ms`` before the first)."""
    out: list[list[float]] = [[] for _ in stages]
    for key, start in started_ms.items():
        previous = start
        for i, stamps in enumerate(stages):
            stamp = stamps.get(key)
            if stamp is not None:
                out[i].append(float(stamp - previous))
                previous = stamp
    return out


async def hop_breakdown(settings: Settings, started_ms: Mapping[str, int]) -> list[dict[str, Any]]:
    """p50/p95/p99 per hop of the critical path for the conversions in ``started_ms``
    (conversion key -> received_at_ms)."""
    stages = [
        first_stamps(await read_all(settings, settings.topic_name(topic)), started_ms)
        for topic, _ in CRITICAL_PATH
    ]
    return [
        {"topic": topic, "written_by": writer, **figures.latency_summary(latencies)}
        for (topic, writer), latencies in zip(
            CRITICAL_PATH, hop_latencies(started_ms, stages), strict=True
        )
    ]
