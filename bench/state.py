"""State growth: RSS per service while identity links and engagements load through the mesh.

    .venv/bin/python -m bench.state --links 1000000 --engagements 5000000 --steps 5

A fresh namespace and mesh (one worker per service, development mode), then
``--steps`` equal slices of synthetic identity signals (one ``link`` per
identifier, a few identifiers per user) and engagements (views and clicks of
those users), each slice produced at full speed and consumed by every service
before the next. After each slice: records loaded, seconds, and the current
and peak RSS of every service (``/proc/<pid>/status``). RSS that stays flat
while the state grows says the state lives on disk (docs/benchmarks.md).

Then, over the whole state, ``--conversions`` conversions of the loaded users
at full speed and as many others at half that rate (``--rate`` to choose;
``--conversions 0`` skips them), measured as ``convmesh bench`` measures its
pushes: the speed a deployment keeps once its state is large, which the small
state of ``convmesh bench`` cannot show (an index that no longer fits the
cache, a user's engagements read at every conversion).
Writes the JSON report to ``var/bench/state-<namespace>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import figures
from bench.kafka_probe import Collector, Item, Offsets, produce_all, wait_consumed
from bench.pipeline import (
    ATTRIBUTED,
    REPORTS,
    BenchConfig,
    Stamped,
    add_warmup_option,
    consumer_groups,
    drop_namespace,
    first_results,
    measure_push,
    refuse_bad_warmup,
    split_off_warmup,
    warm_up,
)
from bench.procstats import load_1m, peak_rss_mb, report_header, worker_pids, write_report
from ops import mesh
from ops.workload import conversion_key
from shared.runtime.settings import REPO_ROOT, SERVICES, Settings

DAY_MS = 86_400_000
KEY_TYPES = ("em", "ph", "hashed_maid")
#: A link's key type -> the user_data field a conversion carries it in.
USER_DATA_FIELDS = {"em": "em", "ph": "ph", "hashed_maid": "hashed_maids"}
ACCOUNTS = ("549755885175", "549755885176", "549755885177")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def links(start: int, count: int, users: int, now_ms: int) -> Iterator[tuple[str, bytes, bytes]]:
    """identity.signals: link n points identifier n at user n % users. A user's links
    take the key types in turn (by ``n // users``, whatever ``users`` is)."""
    for n in range(start, start + count):
        key_type = KEY_TYPES[(n // users) % len(KEY_TYPES)]
        key = _hash(f"id-{n}")
        value = {
            "user_id": f"u{n % users:09d}",
            "key_type": key_type,
            "key": key,
            "ad_account_id": None,
            "op": "link",
            "ts_ms": now_ms - (n % 50 + 1) * DAY_MS,  # before any conversion: all match
        }
        yield "identity.signals", key.encode(), orjson.dumps(value)


def engagements(
    start: int, count: int, users: int, now_ms: int
) -> Iterator[tuple[str, bytes, bytes]]:
    """ads.engagements: engagement n of user n % users, one click in four of every
    user's engagements (by ``n // users``, whatever ``users`` is)."""
    for n in range(start, start + count):
        user = f"u{n % users:09d}"
        kind = "click" if (n // users) % 4 == 0 else "view"
        value = {
            "engagement_id": f"e{n:010d}",
            "user_id": user,
            "ad_account_id": ACCOUNTS[n % len(ACCOUNTS)],
            "campaign_id": f"c-{n % 20:06d}",
            "ad_group_id": f"g-{n % 60:06d}",
            "ad_id": f"a-{n % 180:06d}",
            "type": kind,
            "ts_ms": now_ms - (n % 55) * DAY_MS - n % 3_600_000,
            "click_id": f"epik-{n:012d}" if kind == "click" else None,
        }
        yield "ads.engagements", user.encode(), orjson.dumps(value)


def conversions(start: int, count: int, users: int, links_loaded: int, now_ms: int) -> list[Item]:
    """conversions.raw: conversion n of a loaded user, with the first link of each key
    type that user has among the ``links_loaded`` first (``links``), so that every one
    matches through the keys table; users spread over the whole range."""
    if min(users, links_loaded) < 1:
        raise ValueError("conversions need loaded links of at least one user")
    items = []
    for n in range(start, start + count):
        user = (n * 7_919) % min(users, links_loaded)
        user_data: dict[str, list[str]] = {}
        for link in range(user, links_loaded, users):
            field = USER_DATA_FIELDS[KEY_TYPES[(link // users) % len(KEY_TYPES)]]
            user_data.setdefault(field, [_hash(f"id-{link}")])
        account = ACCOUNTS[n % len(ACCOUNTS)]
        event = {
            "event_name": "checkout",
            "action_source": "web",
            "event_time": now_ms // 1000 - n % 3_600,
            "event_id": f"state-{n:010d}",
            "user_data": user_data,
            "custom_data": {"currency": "USD", "value": f"{10 + n % 90}.00"},
        }
        envelope = {"ad_account_id": account, "event": event, "source": "api"}
        items.append(Item(account.encode(), envelope, conversion_key(account, event)))
    return items


def rss_mb(pids: list[tuple[str, int]]) -> dict[str, dict[str, float]]:
    """Resident set per service, MB (max over workers): current (VmRSS), peak (VmHWM),
    and the current split into anonymous memory (heaps: Python's, RocksDB's) and
    file pages (mapped libraries and files, which the kernel can drop)."""
    wanted = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}
    out: dict[str, dict[str, float]] = {}
    for service, pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = figures.status_kb(status)
        current = out.setdefault(service, dict.fromkeys(wanted.values(), 0.0))
        for name, figure in wanted.items():
            current[figure] = max(current[figure], round(fields.get(name, 0) / 1024, 1))
    return out


def disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def links_loaded(args: argparse.Namespace) -> int:
    """How many links ``load_steps`` produces: ``--steps`` equal slices of ``--links``."""
    return int(args.links // args.steps * args.steps)


async def load_steps(
    settings: Settings, args: argparse.Namespace, say: Any
) -> list[dict[str, Any]]:
    pids = worker_pids(settings, dict.fromkeys(SERVICES, 1))
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    steps = []
    now_ms = int(time.time() * 1000)
    link_step, eng_step = args.links // args.steps, args.engagements // args.steps
    try:
        for step in range(args.steps):
            t0 = time.monotonic()
            records = [
                (settings.topic_name(t), k, v)
                for t, k, v in [
                    *links(step * link_step, link_step, args.users, now_ms),
                    *engagements(step * eng_step, eng_step, args.users, now_ms),
                ]
            ]
            await produce_all(settings.bootstrap, records)
            lag = await wait_consumed(probe, consumer_groups(settings), args.stall_s)
            row = {
                "links": (step + 1) * link_step,
                "engagements": (step + 1) * eng_step,
                "seconds": round(time.monotonic() - t0, 1),
                "records_per_s": round(len(records) / max(time.monotonic() - t0, 1e-9)),
                "lag_left": lag,
                "load_1m": load_1m(),
                "rss_mb": rss_mb(pids),
                "disk_mb": {s: disk_mb(settings.data_dir / "services" / s) for s in SERVICES},
            }
            steps.append(row)
            rss = ", ".join(
                f"{s} {v['rss']:.0f} (anon {v['anon']:.0f})" for s, v in row["rss_mb"].items()
            )
            say(
                f"step {step + 1}/{args.steps}: {row['links']:,} links, "
                f"{row['engagements']:,} engagements in {row['seconds']} s; RSS MB: {rss}"
            )
    finally:
        await probe.stop()
    return steps


async def push_over_state(
    settings: Settings, args: argparse.Namespace, config: BenchConfig, say: Any
) -> dict[str, Any]:
    """The loaded state's conversions: a warm-up, then full speed, then a fixed rate
    (bench.pipeline)."""
    pids = worker_pids(settings, dict.fromkeys(SERVICES, 1))
    now_ms = int(time.time() * 1000)
    n = args.conversions
    loaded = links_loaded(args)
    max_items = conversions(0, n, args.users, loaded, now_ms)
    warmup, fixed_items = split_off_warmup(
        conversions(n, n, args.users, loaded, now_ms), config.warmup_size()
    )
    probe = Offsets(settings.bootstrap, settings.namespace)
    collector = Collector(
        settings.bootstrap, [settings.topic_name(ATTRIBUTED), settings.topic_name(REPORTS)]
    )
    await probe.start()
    await collector.start()
    try:
        await probe.wait_settled(timeout_s=60)
        # The loading wrote none of the conversions' topics: their first records are the
        # warm-up's, as in `convmesh bench`.
        warmed = await warm_up(settings, warmup, collector, probe, config, say)
        runs = {
            "max_rate": await measure_push(
                settings, "max", max_items, None, collector, probe, pids, config, say
            )
        }
        if config.fixed_rate:
            rate = config.rate or max(1.0, runs["max_rate"]["conversions_per_s"] / 2)
            runs["fixed_rate"] = await measure_push(
                settings, "fixed", fixed_items, rate, collector, probe, pids, config, say
            )
        # Whether the pushes took the path they were built for: every one matched
        # (none unidentified), and how many were credited to an engagement.
        wanted = dict.fromkeys(i.result_key for i in [*max_items, *fixed_items])
        statuses = first_statuses(first_results(collector, wanted))
    finally:
        await collector.stop()
        await probe.stop()
    for label, run in runs.items():
        lat = run["latency_attributed_ms"]
        say(
            f"{label}: {run['conversions_per_s']:,} conversions/s, "
            f"{run['cpu_ms_per_conversion']} CPU ms each, attributed p50/p95/p99 "
            f"{lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']} ms"
        )
    say(f"first results by status: {statuses}")
    return {
        "warmup": warmed,
        **runs,
        "first_result_statuses": statuses,
        "peak_rss_mb": peak_rss_mb(pids),
    }


def first_statuses(firsts: dict[str, Stamped]) -> dict[str, int]:
    """How many conversions' first results were attributed, unattributed, unidentified
    (with the reason)."""
    return dict(Counter(status_of(orjson.loads(value)) for _, value in firsts.values()))


def status_of(result: dict[str, Any]) -> str:
    reason = result.get("unidentified_reason")
    return f"{result.get('status')} ({reason})" if reason else str(result.get("status"))


async def run(settings: Settings, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"steps": await load_steps(settings, args, say)}
    if args.conversions > 0:
        config = BenchConfig(
            conversions=args.conversions,
            rate=args.rate,
            fixed_rate=not args.no_fixed_rate,
            profile=tuple(p for p in args.profile.split(",") if p),
            stall_s=args.stall_s,
            out_dir=args.out_dir,
            warmup=args.warmup,
        )
        report["pushes"] = await push_over_state(settings, args, config, say)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--engagements", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--stall-s", type=float, default=120.0)
    parser.add_argument(
        "--conversions", type=int, default=20_000, help="per push over the state (0: none)"
    )
    add_warmup_option(parser, "before the measured pushes, taken from the second")
    parser.add_argument("--rate", type=float, default=None, help="the second push's rate")
    parser.add_argument("--no-fixed-rate", action="store_true", help="only the full-speed push")
    parser.add_argument("--profile", default="", help="services to py-spy during the pushes")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    if args.conversions > 0 and min(args.users, links_loaded(args)) < 1:
        parser.error("--conversions needs at least one link per slice and one user")
    if args.conversions > 0:  # checked before minutes of loading
        refuse_bad_warmup(parser, args.conversions, args.warmup)
    namespace = f"state-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DEV_MODE="true",
        CONVMESH_DATA_DIR=str(args.out_dir / namespace),
    )
    settings = Settings.from_env()
    report = {**report_header(args), "namespace": namespace}
    mesh.up(settings, workers=1)
    try:
        report.update(asyncio.run(run(settings, args, print)))
    finally:
        mesh.down(settings, purge=True)
        drop_namespace(settings)
    write_report(report, args.out_dir / f"{namespace}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
