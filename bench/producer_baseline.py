"""Baseline for bench/api_load.py: the bare aiokafka producer on this machine (not a test).

Publishes the same envelopes the API writes (~1 KB each, 100 per request, keyed by one ad
account) the way the API does -- one explicit record batch per "request", idempotent
producer, acks=all, awaiting every acknowledgement -- with no HTTP, JSON parsing or
validation in the way. It shows how far the broker and aiokafka alone go here.

    .venv/bin/python bench/producer_baseline.py --duration 15 --concurrency 8

Writes to ``<CONVMESH_NAMESPACE>.conversions.raw`` (apply the topics first) or to
``--topic``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_load import percentile, sample_event  # noqa: E402
from services.ingest.protocol import envelope_bytes  # noqa: E402
from services.ingest.publisher import KafkaPublisher  # noqa: E402
from shared.runtime.settings import Settings  # noqa: E402


async def run(args: argparse.Namespace) -> dict:
    settings = Settings.from_env("ingest")
    topic = args.topic or settings.topic_name("conversions.raw")
    now = int(time.time())
    received = int(time.time() * 1000)
    requests = [
        [
            envelope_bytes(args.ad_account, received, sample_event(r * args.batch + i, now))
            for i in range(args.batch)
        ]
        for r in range(32)
    ]
    publisher = KafkaPublisher(settings, producers=args.producers)
    await publisher.start()
    latencies: list[float] = []
    sent = 0
    try:
        await publisher.publish(topic, args.ad_account.encode(), requests[0], received)
        deadline = time.perf_counter() + args.duration
        begin = time.perf_counter()

        async def worker(n: int) -> None:
            nonlocal sent
            k = n
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await publisher.publish(
                    topic, args.ad_account.encode(), requests[k % len(requests)], received
                )
                latencies.append((time.perf_counter() - started) * 1000)
                sent += args.batch
                k += args.concurrency

        await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
        elapsed = time.perf_counter() - begin
    finally:
        await publisher.stop()
    return {
        "mode": "bare producer (KafkaPublisher, acks=all, idempotent, batch per request)",
        "concurrency": args.concurrency,
        "producers": args.producers,
        "batch": args.batch,
        "record_bytes": len(requests[0][0]),
        "duration_s": round(elapsed, 2),
        "records_per_s": round(sent / elapsed, 1),
        "publish_latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topic", default=None)
    parser.add_argument("--ad-account", default="549755885175")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--producers", type=int, default=4, help="KafkaPublisher pool size")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
