"""The send loop: batching, tallies, flat memory on a large file."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

from ops.send.deliver import deliver
from ops.send.readers import read_events

#: Lines of the large-file test: 10 million is too slow for CI; 100k lines
#: (~14 MB) make a whole-file load show as 14 MB and more, against a bound of 6 MB.
LARGE_LINES = 100_000


class CountingSender:
    def __init__(self, reject_every: int = 0) -> None:
        self.retries = 0
        self.sizes: list[int] = []
        self.reject_every = reject_every

    async def send(self, batch: list[dict[str, Any]]) -> list[str]:
        self.sizes.append(len(batch))
        if not self.reject_every:
            return []
        return ["event_time is too old" for e in batch if e["n"] % self.reject_every == 0]


async def test_batches_hold_at_most_1000_events_even_when_asked_for_more() -> None:
    sender = CountingSender()
    tally = await deliver(({"n": n} for n in range(2500)), sender, batch_size=5000)
    assert sender.sizes == [1000, 1000, 500] and tally.sent == 2500


async def test_rejected_events_are_tallied_by_reason() -> None:
    tally = await deliver(({"n": n} for n in range(100)), CountingSender(reject_every=10))
    assert tally.rejected == {"event_time is too old": 10} and tally.accepted == 90


async def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "large.ndjson"
    line = (
        b'{"event_name":"checkout","action_source":"web","event_time":1764151000,"event_id":"ev-%d","user_data":{"em":["'
        + b"a" * 64
        + b'"]}}\n'
    )
    with path.open("wb") as out:
        for n in range(LARGE_LINES):
            out.write(line.replace(b"%d", str(n).encode()))
    assert path.stat().st_size > 40 * LARGE_LINES
    tracemalloc.start()
    try:
        tally = await deliver(read_events(path), CountingSender())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tally.sent == LARGE_LINES
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes"
