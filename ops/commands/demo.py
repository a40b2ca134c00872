"""`convmesh demo`: a fresh mesh, a generated workload through it, a summary.

`make demo` runs `convmesh down --purge` first, then this: the mesh comes up,
`convmesh gen`'s workload (users, ad accounts, clicks, engagements, views,
identity signals, privacy requests, conversions from the four sources with
duplicates, restricted and invalid events) is produced to the input topics,
and once every accepted conversion has its result the summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from typing import Any

import orjson

from ops import mesh
from ops.commands.common import add_data_dir, print_json, settings_from
from ops.commands.mesh import console_url, print_status, status_doc
from ops.commands.privacy import send_request
from ops.lanes import lanes_by_date, render_lanes
from ops.summary import pipeline_summary, render
from shared.contract.errors import ConvmeshError
from shared.kafka.topic_io import latest_by_key, produce, read_all
from shared.runtime.logging import configure_logging
from shared.runtime.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="start the mesh, run a generated workload through it, print a summary"
    )
    add_data_dir(parser)
    parser.add_argument("--workers", type=int, default=1, help="workers per service (default 1)")
    parser.add_argument("--conversions", type=int, default=3000, help="distinct conversions")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--order",
        default="interleaved",
        choices=("context_first", "conversions_first", "interleaved"),
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    parser.set_defaults(func=run_demo)
    summary = subparsers.add_parser(
        "summary",
        help="summarise what the pipeline produced",
        epilog="example:\n  convmesh summary --ad-account 549755885175  (and its three lanes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    summary.add_argument("--json", action="store_true")
    summary.add_argument(
        "--ad-account", default=None, help="also the observed, protected and modeled lanes"
    )
    summary.set_defaults(func=run_summary)


def run_demo(args: argparse.Namespace) -> int:
    from ops.workload import generate

    settings = settings_from(args)
    # The CLI's own JSON log lines would bury the summary: warnings only here
    # (the workers log to their files, see `convmesh logs`).
    configure_logging("cli", 0, "WARNING")
    print(f"Starting the mesh ({args.workers} worker(s) per service) ...")
    mesh.up(settings, workers=args.workers)
    print_status(settings)
    workload = generate(seed=args.seed, conversions=args.conversions)
    records = workload.ordered(args.order)
    expected_keys = {lbl.conversion_key for lbl in workload.raw_labels if lbl.expect == "accepted"}
    print(f"\nProducing {len(records)} input records ({args.order}) ...")
    started = time.monotonic()
    asyncio.run(
        produce(settings, [(settings.topic_name(r.topic), r.key, r.value) for r in records])
    )
    summary = asyncio.run(wait_and_summarise(settings, len(expected_keys), args.timeout))
    print(
        f"All {summary['conversions']} conversions processed in "
        f"{time.monotonic() - started:.1f} s\n"
    )
    print(render(summary))
    account = workload.ad_accounts[0].ad_account_id
    print(
        f"\nReleasing the protected lane (every date before tomorrow) for {account}:"
        f" k={settings.privacy_k}, ε={settings.privacy_epsilon_per_release:g} per release,"
        f" {settings.privacy_epsilon_per_week:g} per week ..."
    )
    lanes = asyncio.run(release_and_read_lanes(settings, account, args.timeout))
    print(render_lanes(lanes))
    print_urls(settings)
    return 0


def run_summary(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    summary = asyncio.run(summarise(settings))
    lanes = asyncio.run(read_lanes(settings, args.ad_account)) if args.ad_account else None
    if args.json:
        print_json({**summary, "lanes": lanes} if lanes else summary)
    else:
        print(render(summary))
        if lanes:
            print("\n" + render_lanes(lanes))
    return 0


LANE_TOPICS = (
    "reports.conversions",
    "reports.conversions.protected",
    "reports.conversions.modeled",
    "privacy.ledger",
)


async def read_lanes(settings: Settings, account: str) -> dict[str, Any]:
    reads = await asyncio.gather(*(read_all(settings, settings.topic_name(n)) for n in LANE_TOPICS))
    observed, protected, modeled, ledger = (latest_by_key(r).values() for r in reads)
    return lanes_by_date(account, observed, protected, modeled, ledger)


async def release_and_read_lanes(
    settings: Settings, account: str, timeout_s: float
) -> dict[str, Any]:
    """Ask for the release of every date before tomorrow, wait for its ledger entry."""
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    request = {
        "op": "release",
        "ad_account_id": account,
        "before": tomorrow,
        "requested_at_ms": int(time.time() * 1000),
    }
    await send_request(settings, request)
    deadline = time.monotonic() + timeout_s
    previous: dict[str, Any] | None = None
    while True:
        lanes = await read_lanes(settings, account)
        # Dates with no attributed conversion are never released: wait until the
        # ledger has answered and nothing changes between two reads.
        answered = any(d["release"] != "not yet" for d in lanes["dates"].values())
        if (answered and lanes == previous) or time.monotonic() > deadline:
            return lanes
        previous = lanes
        await asyncio.sleep(2.0)


async def wait_and_summarise(settings: Settings, keys: int, timeout_s: float) -> dict[str, Any]:
    """Wait until every accepted conversion has a result and the reports are quiet."""
    deadline = time.monotonic() + timeout_s
    previous: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        summary = await summarise(settings)
        if summary["conversions"] >= keys and summary == previous:
            return summary
        previous = summary
        await asyncio.sleep(2.0)
    raise ConvmeshError(f"the pipeline did not finish within {timeout_s:.0f} s")


async def summarise(settings: Settings) -> dict[str, Any]:
    names = (
        "conversions.raw",
        "conversions.accepted",
        "conversions.duplicates",
        "conversions.dlq",
        "conversions.attributed",
        "reports.conversions",
    )
    reads = await asyncio.gather(*(read_all(settings, settings.topic_name(n)) for n in names))
    raw, accepted, duplicates, dlq, attributed, reports = reads
    return pipeline_summary(
        raw_received=len(raw),
        accepted=[orjson.loads(r.value) for r in accepted],
        duplicates=[orjson.loads(r.value) for r in duplicates],
        dlq=[orjson.loads(r.value) for r in dlq],
        raw_topic=settings.topic_name("conversions.raw"),
        attributed=latest_by_key(attributed),
        reports=latest_by_key(reports),
    )


def print_urls(settings: Settings) -> None:
    print(f"\nOperator console: {console_url(settings)}")
    print("\nLook at:")
    urls = {w["name"]: w["url"] for w in status_doc(settings)["services"]}
    for name, url in urls.items():
        print(f"  {name:<15} {url}/health  {url}/ready")
    if "ingest" in urls:
        print(f"  ingest stats    {urls['ingest']}/stats  (Authorization: Bearer <operator token>)")
        print(f"  Conversions API POST {urls['ingest']}/v5/ad_accounts/<id>/events")
    if "aggregate" in urls:
        print(
            f"  reports         {urls['aggregate']}/v5/ad_accounts/<id>/reports"
            "  (Bearer <the account's API token>)"
        )
        print(f"  diagnostics     {urls['aggregate']}/v5/ad_accounts/<id>/events/diagnostics")
    print("  metrics         <worker url>/metrics  (Authorization: Bearer <operator token>)")
    print(f"  worker logs     convmesh logs <service> [-f]  ({settings.data_dir}/logs)")
    print("  `convmesh summary` prints this summary again; `convmesh down` stops the mesh.")
