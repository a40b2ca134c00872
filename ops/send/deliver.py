"""The send loop: batches from a stream of events to a sender, tallied."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ops.send.readers import batches

MAX_BATCH = 1000


class Sender(Protocol):
    retries: int

    async def send(self, batch: list[dict[str, Any]]) -> list[str]: ...


@dataclass
class Tally:
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.sent - sum(self.rejected.values())


async def deliver(
    events: Iterable[dict[str, Any]],
    sender: Sender,
    batch_size: int = MAX_BATCH,
    on_batch: Callable[[Tally], Awaitable[None] | None] | None = None,
) -> Tally:
    """Send every event in batches of at most ``batch_size`` (<= 1000)."""
    size = max(1, min(batch_size, MAX_BATCH))
    tally = Tally()
    for batch in batches(events, size):
        reasons = await sender.send(batch)
        tally.sent += len(batch)
        tally.rejected.update(reasons)
        if on_batch is not None:
            result = on_batch(tally)
            if result is not None:
                await result
    return tally
