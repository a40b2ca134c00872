"""`convmesh gen`: generate a workload (ops.workload) and produce it to the input topics.

    convmesh gen [--conversions N] [--seed S] [--order context_first|conversions_first|interleaved]
                 [--bootstrap HOST:PORT] [--now-ms MS] [--dry-run] [--json]

Records keep their keys (conversions.raw: the ad account id; engagements and
privacy requests: the user id; identity signals: the hash) and are produced in
the order of ``Workload.ordered(order)`` with ``acks=all`` and idempotence, so
each partition receives them in that order. Topic names are namespaced by
``CONVMESH_NAMESPACE`` (``Settings.topic_name``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ops.commands.common import print_json
from ops.workload import INPUT_TOPICS, ORDERS, Record, Workload, default_now_ms, generate
from shared.contract.errors import ConvmeshError
from shared.kafka.client_config import client_kwargs
from shared.runtime.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gen", help="generate a deterministic workload and produce it to the input topics"
    )
    parser.add_argument(
        "--conversions",
        type=int,
        default=2000,
        help="distinct valid conversions (duplicates and invalid ones come on top; default 2000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="context_first",
        help="arrival order of the topics (default context_first)",
    )
    parser.add_argument("--ad-accounts", type=int, default=3, help="ad accounts (default 3)")
    parser.add_argument(
        "--now-ms",
        type=int,
        default=None,
        help="the workload's 'now' in Unix ms (default: now, to the minute)",
    )
    parser.add_argument(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--create-topics",
        action="store_true",
        help="first create missing topics of topics.yaml (as `topics apply`)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="generate and print the counts, produce nothing"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.conversions < 0:
        raise SystemExit("convmesh: error: --conversions must be >= 0")
    settings = Settings.from_env()
    if args.bootstrap:
        settings = dataclasses.replace(settings, bootstrap=args.bootstrap)
    bootstrap = settings.bootstrap
    now_ms = args.now_ms if args.now_ms is not None else default_now_ms()
    started = time.monotonic()
    workload = generate(args.seed, args.conversions, now_ms=now_ms, ad_accounts=args.ad_accounts)
    records = workload.ordered(args.order)
    produced: dict[str, int] = {}
    if not args.dry_run:
        produced = asyncio.run(_produce(settings, records, args.create_topics))
    report = summary(workload, args.order, now_ms, produced, bootstrap, settings)
    report["seconds"] = round(time.monotonic() - started, 3)
    if args.json:
        print_json(report)
    else:
        verb = "would produce" if args.dry_run else "produced"
        print(
            f"seed={args.seed} order={args.order} now_ms={now_ms} "
            f"bootstrap={bootstrap} namespace={settings.namespace or '-'}"
        )
        for topic, count in report["topics"].items():
            print(f"  {verb} {count:>7}  {report['topic_names'][topic]}")
        raw = report["conversions_raw"]
        print(
            f"  conversions.raw: {raw['accepted']} accepted, {raw['duplicate']} duplicates, "
            f"{raw['rejected']} rejected (expected)"
        )
        for source, row in sorted(report["by_source"].items()):
            print(f"  source {source:<6} " + ", ".join(f"{k}={v}" for k, v in row.items()))
        print(f"  {report['seconds']} s")
    return 0


async def _produce(settings: Settings, records: list[Record], create: bool) -> dict[str, int]:
    if create:
        from shared.kafka.admin import apply_topics

        await apply_topics(settings)
    await require_topics(settings, [settings.topic_name(t) for t in INPUT_TOPICS])
    return await produce_records(records, settings)


async def require_topics(settings: Settings, names: list[str]) -> None:
    """Raise ConvmeshError naming the topics that do not exist on the cluster."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = [n for n in names if n not in existing]
    if missing:
        raise ConvmeshError(
            f"topics missing on {settings.bootstrap}: {', '.join(missing)} "
            "(run `convmesh topics apply` or pass --create-topics)"
        )


def summary(
    workload: Workload,
    order: str,
    now_ms: int,
    produced: dict[str, int],
    bootstrap: str,
    settings: Settings,
) -> dict[str, Any]:
    counts = workload.counts()
    topics = {t: n for t, n in counts.items() if not t.startswith("raw_")}
    return {
        "seed": workload.seed,
        "order": order,
        "now_ms": now_ms,
        "bootstrap": bootstrap,
        "topics": produced or topics,
        "topic_names": {t: settings.topic_name(t) for t in topics},
        "conversions_raw": {k[4:]: v for k, v in counts.items() if k.startswith("raw_")},
        "by_source": workload.expected_counts_by_source(),
        "invalid_kinds": dict(
            Counter(lbl.kind for lbl in workload.raw_labels if lbl.expect == "rejected")
        ),
    }


async def produce_records(
    records: Iterable[Record],
    settings: Settings,
    *,
    linger_ms: int = 20,
    window: int = 5_000,
) -> dict[str, int]:
    """Produce records in order (acks=all, idempotent); returns the count per topic.

    Records name registry topics; ``settings.topic_name`` gives the real ones. At
    most ``window`` sends are in flight; ordering per partition is kept by the
    idempotent producer.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **client_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        compression_type=None,
        request_timeout_ms=30_000,
    )
    await producer.start()
    counts: Counter[str] = Counter()
    pending: list[asyncio.Future[Any]] = []
    try:
        for rec in records:
            pending.append(
                await producer.send(settings.topic_name(rec.topic), rec.value, key=rec.key)
            )
            counts[rec.topic] += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return dict(counts)
