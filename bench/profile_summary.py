"""Where the time goes: a summary of py-spy ``--format raw`` (collapsed stacks) files.

    python -m bench.profile_summary var/bench/<ns>-max-attribute.txt [...]

Per file: the share of samples whose stack passes through each category below
among the samples not waiting in ``select`` (inclusive, so categories overlap: an
outbox send that goes through Faust's producer counts for both), and the functions
most samples end in (self time, over all samples).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable

#: category -> pattern matched against one frame "function (file:line)"
CATEGORIES: dict[str, str] = {
    "service rules (rules.py/logic.py)": r"services/\w+/(rules|logic)\.py",
    "service agents (agents.py)": r"services/\w+/agents\.py",
    "shared.contract (decode, keys, records)": r"shared/contract/",
    "batching loop / outbox / state cache": r"shared/runtime/batching\.py",
    "faust producer send (Producer.send, FutureMessage)": (
        r"faust/(transport/producer|transport/drivers/aiokafka\.py:\d+\)$|topics\.py)"
        r"|faust/types/tuples|FutureMessage|publish_message"
    ),
    "faust tables / changelog": r"faust/tables/",
    "rocksdb store": r"faust/stores/rocksdb",
    "faust consumer / fetch path": r"faust/transport/consumer|aiokafka/consumer/fetcher",
    "aiokafka producer (batches, sender)": r"aiokafka/producer/",
    "aiokafka client / protocol": r"aiokafka/(conn|client|protocol|record)",
    "json (orjson/json)": r"json",
    "logging (structlog)": r"structlog|shared/runtime/logging",
    "event loop (select, callbacks)": r"asyncio/(base_events|selector_events|events)|selectors\.py",
}


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """(frames root-first, samples) per collapsed-stack line."""
    out = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


#: a sample whose innermost frame is one of these waits: the loop for the network, or
#: the stall report's watcher thread in its sleep between two looks (py-spy counts a
#: sleeping thread's samples too; they were 10% of identity_match's in one profile)
IDLE_LEAF = re.compile(r"select \(selectors\.py|watch \(shared/runtime/stall_report\.py")


def summarize(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, object]:
    total = sum(n for _, n in stacks)
    busy_stacks = [(f, n) for f, n in stacks if not IDLE_LEAF.search(f[-1])]
    busy = sum(n for _, n in busy_stacks)
    shares: dict[str, float] = {}
    for name, pattern in CATEGORIES.items():
        rx = re.compile(pattern)
        hit = sum(n for frames, n in busy_stacks if any(rx.search(f) for f in frames))
        shares[name] = round(100.0 * hit / busy, 1) if busy else 0.0
    leaves: Counter[str] = Counter()
    for frames, n in stacks:
        leaves[frames[-1]] += n
    return {
        "samples": total,
        "idle_percent": round(100.0 * (total - busy) / total, 1) if total else 0.0,
        #: of the busy (non-idle) samples
        "inclusive_percent": shares,
        "top_self": [(f, round(100.0 * n / total, 1)) for f, n in leaves.most_common(top)],
    }


def main(argv: list[str]) -> int:
    for path in argv:
        with open(path, encoding="utf-8", errors="replace") as fh:
            summary = summarize(parse(fh))
        print(f"== {path}: {summary['samples']} samples, {summary['idle_percent']}% in select")
        print("  of the busy samples:")
        for name, pct in summary["inclusive_percent"].items():  # type: ignore[attr-defined]
            print(f"  {pct:5.1f}%  {name}")
        print("  top self:")
        for frame, pct in summary["top_self"]:  # type: ignore[attr-defined]
            print(f"  {pct:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
