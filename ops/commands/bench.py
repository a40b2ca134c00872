"""`convmesh bench`: the pipeline's throughput and latency against the bare-Kafka limit.

    convmesh bench [--conversions 20000] [--workers 1] [--workers-of attribute=2]
                   [--rate R] [--profile attribute,identity_match] [--smoke]
                   [--json-out var/bench/<namespace>.json] [--no-baseline] [--warmup W]

Needs a broker (KAFKA_BOOTSTRAP, default 127.0.0.1:9092); starts its own mesh in a
fresh namespace and development mode, and removes it afterwards. What it measures
and how: bench/pipeline.py and docs/benchmarks.md. ``--smoke`` runs 300 conversions
to check that the instrument works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.runtime.errors import ConfigError
from shared.runtime.settings import SERVICES

if TYPE_CHECKING:
    from bench.pipeline import BenchConfig

SMOKE_CONVERSIONS = 300


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure the pipeline against a chain of plain Kafka relays"
    )
    parser.add_argument(
        "--conversions",
        type=int,
        default=20_000,
        help="per push (20000); the fixed-rate push gives the warm-up its share",
    )
    parser.add_argument("--workers", type=int, default=1, help="workers per service (1)")
    parser.add_argument(
        "--workers-of",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="N workers of one service (repeatable), e.g. attribute=2",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="offered rate of the second push (half the max)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--profile",
        default="",
        metavar="SVC[,SVC]",
        help="py-spy worker 0 of these services during each push",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the relay chain")
    parser.add_argument("--no-fixed-rate", action="store_true", help="skip the second push")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="W",
        help="conversions through the mesh before the measured pushes, taken from the"
        " second push (a tenth of a push, at most 1000; 0: none)",
    )
    parser.add_argument("--keep-topics", action="store_true", help="keep the namespace's topics")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_CONVERSIONS} conversions")
    parser.add_argument("--json-out", type=Path, default=None, help="report path (var/bench/)")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="workers' data, profiles (var/bench/)"
    )
    parser.set_defaults(func=_run)


def config_from(args: argparse.Namespace) -> BenchConfig:
    # bench/ is imported here, not at module level: the ops image (Dockerfile) has no
    # bench/, and every command module is imported to build the parser.
    from bench.figures import parse_workers_of
    from bench.pipeline import BenchConfig

    try:
        workers_of = parse_workers_of(args.workers_of)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    unknown = sorted(set(workers_of) - set(SERVICES))
    if unknown:
        raise ConfigError(f"--workers-of: unknown services {unknown}; one of {list(SERVICES)}")
    if any(n < args.workers for n in workers_of.values()):
        raise ConfigError("--workers-of N must be at least --workers")
    profile = tuple(s for s in args.profile.split(",") if s)
    if set(profile) - set(SERVICES):
        raise ConfigError(f"--profile: services are {list(SERVICES)}")
    conversions = SMOKE_CONVERSIONS if args.smoke else args.conversions
    if conversions < 1:
        raise ConfigError("--conversions must be >= 1")
    try:
        return BenchConfig(
            conversions=conversions,
            workers=args.workers,
            workers_of=workers_of,
            rate=args.rate,
            seed=args.seed,
            smoke=args.smoke,
            baseline=not args.no_baseline,
            fixed_rate=not args.no_fixed_rate,
            profile=profile,
            keep_topics=args.keep_topics,
            warmup=args.warmup,
            stall_s=30.0 if args.smoke else 90.0,
            **({"out_dir": args.out_dir.resolve()} if args.out_dir else {}),
        )
    except ValueError as exc:  # BenchConfig's own checks (the warm-up's size)
        raise ConfigError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from bench.pipeline import run

    config = config_from(args)
    report = run(config, say=lambda line: print(f"bench: {line}", flush=True))
    out = args.json_out or config.out_dir / f"{report['namespace']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    print(f"report: {out}")
    return 0


def table_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, full speed, fixed rate) rows of the summary table."""
    pipeline = report["pipeline"]
    runs = [pipeline["max_rate"], pipeline.get("fixed_rate") or {}]

    def cell(run: dict[str, Any], *path: str, digits: int = 1) -> str:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return "-"
        return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)

    def fine(run: dict[str, Any], *path: str) -> str:
        """Ratios and CPU ms per record or conversion: a tenth would hide them."""
        return cell(run, *path, digits=3)

    def both(*path: str) -> tuple[str, str]:
        return cell(runs[0], *path), cell(runs[1], *path)

    rows = [
        ("offered conversions/s", "max", cell(runs[1], "offered_per_s")),
        ("conversions/s end to end", *both("conversions_per_s")),
    ]
    base = report.get("baseline")
    if base:
        rows.append(("bare relays records/s", cell(base, "records_per_s"), ""))
        rows.append(("ratio to bare relays", fine(runs[0], "ratio_to_baseline"), ""))
        rows.append(("bare relays CPU ms/record", fine(base, "cpu_ms_per_record"), ""))
        rows.append(("broker CPU ms/relayed record", fine(base, "broker_cpu_ms_per_record"), ""))
        rows.append(("CPU ratio to bare relays", fine(runs[0], "cpu_ratio_to_baseline"), ""))
    for name in ("latency_attributed_ms", "latency_reports_ms"):
        for p in ("p50_ms", "p95_ms", "p99_ms"):
            rows.append((f"{name.split('_')[1]} {p[:3]} ms", *both(name, p)))
    for p in ("p50_ms", "p99_ms"):
        rows.append((f"push acked {p[:3]} ms", *both("produce_ack_ms", p)))
    rows.append(("records/conversion", *both("records_per_conversion_total")))
    for name, key in (
        ("mesh CPU ms/conversion", "cpu_ms_per_conversion"),
        ("broker CPU ms/conversion", "broker_cpu_ms_per_conversion"),
    ):
        rows.append((name, fine(runs[0], key), fine(runs[1], key)))
    for service in SERVICES:
        rows.append((f"cpu s {service}", *both("cpu_s", service)))
        rows.append((f"peak RSS MB {service}", cell(pipeline, "peak_rss_mb", service), ""))
        rows.append((f"disk writes MiB {service}", *both("disk_write_mib", service)))
    rows.append(("disk writes MiB, whole run", cell(pipeline, "disk_write_mib_all"), ""))
    rows.append(("bench's own CPU s", *both("bench_cpu_s")))
    rows.append(("machine's busy cores", *both("machine_busy_cores")))
    rows.append(("load 1m before", *both("load_1m")))
    return rows


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"convmesh bench {report['namespace']} @ {report['commit']}")
    for col in ("figure", "full speed", "fixed rate"):
        table.add_column(col, justify="right" if col != "figure" else "left")
    for row in table_rows(report):
        table.add_row(*row)
    per_conv = Table(title="records per accepted conversion (full-speed push)")
    per_conv.add_column("topic")
    per_conv.add_column("records", justify="right")
    for topic, n in report["pipeline"]["max_rate"]["records_per_conversion"].items():
        per_conv.add_row(topic, f"{n:.2f}")
    hops = Table(title="latency per hop at the fixed rate (ms since the stage before)")
    for col in ("topic", "written by", "p50", "p95", "p99"):
        hops.add_column(col, justify="right" if col in ("p50", "p95", "p99") else "left")
    for hop in (report["pipeline"].get("fixed_rate") or {}).get("latency_per_hop_ms", []):
        hops.add_row(
            hop["topic"],
            hop["written_by"],
            *(f"{hop[p]:,.0f}" for p in ("p50_ms", "p95_ms", "p99_ms")),
        )
    sizes = Table(title="tables after the run (from their changelogs)")
    for col in ("table", "entries", "key bytes", "value bytes"):
        sizes.add_column(col, justify="right" if col != "table" else "left")
    for name, size in report.get("table_sizes", {}).items():
        sizes.add_row(name, *(f"{size[k]:,}" for k in ("entries", "key_bytes", "value_bytes")))
    console = Console()
    console.print(table)
    console.print(per_conv)
    console.print(hops)
    console.print(sizes)
