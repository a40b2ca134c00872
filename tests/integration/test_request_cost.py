"""`python -m bench.request_cost` on the broker: every figure is measured and positive,
and its throwaway topics are gone afterwards.

The figures of a shared CI machine say nothing about this one, so none is compared
to a value; the test only shows that the instrument works.
"""

from __future__ import annotations

import asyncio
import os
import time

from bench import request_cost
from bench.kafka_probe import Offsets


def test_every_request_cost_is_measured(bootstrap: str) -> None:
    figures = asyncio.run(request_cost.measure(bootstrap, rounds=20, idle_s=0.5))
    assert set(figures) == {
        "produce_1_record_ms",
        "produce_10_records_ms",
        "idle_8_partitions_cpu_pct",
        "fetch_8_partitions_ms",
        "idle_80_partitions_cpu_pct",
        "fetch_80_partitions_ms",
        "idle_8_partitions_session_cpu_pct",
        "fetch_8_partitions_session_ms",
        "idle_80_partitions_session_cpu_pct",
        "fetch_80_partitions_session_ms",
    }
    assert all(value > 0 for value in figures.values()), figures
    assert "CPU ms per fetch" in request_cost.report(figures)


def test_its_topics_are_deleted_afterwards(bootstrap: str) -> None:
    async def left_over() -> list[str]:
        await request_cost.measure(bootstrap, rounds=5, idle_s=0.1)
        topics = Offsets(bootstrap, f"request-cost-{os.getpid()}")
        await topics.start()
        try:
            deadline = time.monotonic() + 30  # a deletion reaches metadata a little later
            while (names := await topics.topics()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return names
        finally:
            await topics.stop()

    assert asyncio.run(left_over()) == []
