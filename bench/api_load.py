"""Load benchmark of the Conversions API (not a test).

Sends batches of valid events to a *running* ingest service over keep-alive connections
and reports accepted events per second and request latency percentiles.

    # closed loop: as fast as the server answers, N concurrent connections
    .venv/bin/python bench/api_load.py --url http://127.0.0.1:6100 --token cvm_... \\
        --ad-account 549755885175 --connections 8 --duration 20

    # open loop at a fixed rate (events/s), latency measured from the scheduled send time
    .venv/bin/python bench/api_load.py ... --rate 10000 --duration 20

``--create-token`` makes a token itself (writes to ``api.tokens`` of the environment's
CONVMESH_NAMESPACE, as ``convmesh tokens create`` does) instead of ``--token``.
The server's rate limit (CONVMESH_API_RATE_PER_MINUTE, default 5,000 calls per minute
per ad account) must be raised for one ad account to go past ~83 requests/s; or pass
several ``--ad-account`` values with ``--create-token``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sample_event(i: int, now_s: int) -> dict:
    """A realistic, valid web checkout event (hashed identifiers, as the SDK sends them)."""
    em = hashlib.sha256(f"user{i % 5000}@example.com".encode()).hexdigest()
    ph = hashlib.sha256(f"1555000{i % 10000:04d}".encode()).hexdigest()
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": now_s - (i % 600),
        "event_id": f"bench-{now_s}-{i}",
        "event_source_url": "https://shop.example.com/checkout",
        "opt_out": False,
        "partner_name": None,
        "app_id": None,
        "app_name": None,
        "app_version": None,
        "device_brand": None,
        "device_carrier": None,
        "device_model": None,
        "device_type": None,
        "os_version": None,
        "language": "en",
        "user_data": {
            "em": [em],
            "ph": [ph],
            "client_ip_address": f"203.0.113.{i % 250}",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "click_id": f"dj0yJnU9{i:08d}",
        },
        "custom_data": {
            "currency": "USD",
            "value": f"{(i % 9000) / 100 + 1:.2f}",
            "content_ids": [f"sku-{i % 300}"],
            "num_items": 1 + i % 3,
            "order_id": f"order-{i}",
        },
    }


def make_bodies(batch: int, count: int) -> list[bytes]:
    now = int(time.time())
    counter = itertools.count()
    return [
        orjson.dumps({"data": [sample_event(next(counter), now) for _ in range(batch)]})
        for _ in range(count)
    ]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


class Stats:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.events_accepted = 0
        self.errors: Counter[str] = Counter()


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    batch: int,
    stats: Stats,
    started: float,
) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError) as exc:
        stats.errors[type(exc).__name__] += 1
        return
    stats.latencies_ms.append((time.perf_counter() - started) * 1000)
    stats.statuses[status] += 1
    if status == 200:
        stats.events_accepted += batch


async def run(args: argparse.Namespace, targets: list[tuple[str, str]]) -> Stats:
    bodies = make_bodies(args.batch, args.bodies)
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=args.connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        plans = [
            (
                f"{args.url.rstrip('/')}/v5/ad_accounts/{ad}/events",
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            for ad, token in targets
        ]
        # warm-up: open the connections and let the server settle
        warm = time.perf_counter() + args.warmup
        while time.perf_counter() < warm:
            url, headers = plans[0]
            await asyncio.gather(
                *(
                    _post(
                        session, url, bodies[0], headers, args.batch, Stats(), time.perf_counter()
                    )
                    for _ in range(args.connections)
                )
            )
        deadline = time.perf_counter() + args.duration
        begin = time.perf_counter()
        if args.rate <= 0:

            async def worker(n: int) -> None:
                k = n
                while time.perf_counter() < deadline:
                    url, headers = plans[k % len(plans)]
                    body = bodies[k % len(bodies)]
                    k += args.connections
                    await _post(session, url, body, headers, args.batch, stats, time.perf_counter())

            await asyncio.gather(*(worker(n) for n in range(args.connections)))
        else:
            interval = args.batch / args.rate
            tasks: set[asyncio.Task[None]] = set()
            k = 0
            next_at = begin
            while next_at < deadline:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                url, headers = plans[k % len(plans)]
                task = asyncio.create_task(
                    _post(
                        session, url, bodies[k % len(bodies)], headers, args.batch, stats, next_at
                    )
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
                next_at = begin + k * interval
            await asyncio.gather(*tasks)
        stats.elapsed = time.perf_counter() - begin  # type: ignore[attr-defined]
    return stats


def create_tokens(ad_accounts: list[str]) -> list[tuple[str, str]]:
    from shared.kafka.api_tokens import new_token, publish_record
    from shared.runtime.settings import Settings

    settings = Settings.from_env()
    out = []
    for ad in ad_accounts:
        token, record = new_token(ad)
        asyncio.run(publish_record(settings, record))
        out.append((ad, token))
    time.sleep(2.0)  # let the ingest workers' token readers catch up
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:6100", help="ingest web base URL")
    parser.add_argument("--ad-account", action="append", default=[], help="repeatable")
    parser.add_argument("--token", help="conversion token of the (single) ad account")
    parser.add_argument("--create-token", action="store_true", help="create a token per account")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (0: closed loop, max)")
    parser.add_argument("--bodies", type=int, default=64, help="distinct pre-encoded bodies")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    ad_accounts = args.ad_account or ["549755885175"]
    if args.create_token:
        targets = create_tokens(ad_accounts)
    elif args.token and len(ad_accounts) == 1:
        targets = [(ad_accounts[0], args.token)]
    else:
        parser.error("give --token with one --ad-account, or --create-token")
    cpu_before = time.process_time()
    stats = asyncio.run(run(args, targets))
    client_cpu_s = time.process_time() - cpu_before
    elapsed = stats.elapsed  # type: ignore[attr-defined]
    lat = stats.latencies_ms
    result = {
        "mode": "closed-loop" if args.rate <= 0 else f"fixed-rate {args.rate:.0f} events/s",
        "connections": args.connections,
        "batch": args.batch,
        "duration_s": round(elapsed, 2),
        "requests": len(lat),
        "statuses": dict(stats.statuses),
        "client_errors": dict(stats.errors),
        "events_accepted_per_s": round(stats.events_accepted / elapsed, 1),
        "client_cpu_s": round(client_cpu_s, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 2),
            "p90": round(percentile(lat, 90), 2),
            "p99": round(percentile(lat, 99), 2),
            "max": round(max(lat), 2) if lat else None,
            "mean": round(statistics.fmean(lat), 2) if lat else None,
        },
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
