"""Changelog records a recovery waits for that the consumer has already handed out.

A worker restoring a table reads the table's changelog partitions through its one
consumer: the fetch loop hands each record to Faust's conductor, which queues it for
the recovery. The chaos suite caught a dedupe worker whose consumer had read one such
partition to its end (aiokafka's position at the high watermark) while the recovery
had received none of its records, with nothing queued: the records were dropped on
the way, and nothing reads a changelog partition again until the next rebalance, so
the worker stayed in recovery, not ready, for minutes (docs/reliability.md, "A dedupe
recovery that received nothing for eight minutes").

The stream partitions have such a net already (``InOrderConsumer.heal_lost``); this
is the one for changelogs: a partition whose records the consumer handed out past
the last one the recovery received, silent for ``GRACE_S`` while the recovery's queue
is empty, is read again from just after that record. The recovery takes a record
only past the last offset it has, so one read twice is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

#: A partition silent this long, with its records handed out, is read again.
GRACE_S = 30.0
#: How often a worker looks.
CHECK_INTERVAL_S = 10.0

P = TypeVar("P")


def recovery_of(app: Any) -> Any:
    """A Faust app's table recovery, if its tables exist: never builds them (the stall
    report reads it from another thread)."""
    return getattr(vars(app).get("tables"), "_recovery", None)


@dataclass(frozen=True, slots=True)
class ChangelogRead:
    """Where the recovery and the consumer are in one active changelog partition."""

    #: The last offset the recovery received (-1: none yet).
    received: int
    #: The partition's last offset when the recovery began: it reads up to here.
    last_offset: int
    #: The consumer's next offset to hand out (None: not known yet).
    position: int | None
    #: Seconds since the recovery last received a record of it (or began).
    silent_s: float


def lost_reads(
    reads: Mapping[P, ChangelogRead], *, queue_empty: bool, grace_s: float = GRACE_S
) -> dict[P, int]:
    """The partitions to read again, each with the offset to read from.

    A partition qualifies when the recovery still needs records of it, the consumer
    has handed out records past the last one received, none arrived for ``grace_s``,
    and the recovery's queue holds nothing (records still queued are on their way).
    """
    if not queue_empty:
        return {}
    return {
        partition: read.received + 1
        for partition, read in reads.items()
        if read.received < read.last_offset
        and read.position is not None
        and read.position > read.received + 1
        and read.silent_s >= grace_s
    }
