"""`convmesh topics apply|list`: the registry's topics on the cluster."""

from __future__ import annotations

import argparse
import asyncio

from ops.commands.common import print_json, settings_from
from shared.kafka.admin import all_specs, apply_topics
from shared.kafka.topics import real_name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="create or list the topics of topics.yaml")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    apply = actions.add_parser(
        "apply", help="create missing topics and changelogs, report drift from topics.yaml"
    )
    apply.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="replicas of each new topic (default: topics.yaml, capped at the broker count)",
    )
    apply.add_argument("--strict", action="store_true", help="exit 1 when a topic drifted")
    apply.add_argument(
        "--fix-configs",
        action="store_true",
        help="set the configs of drifted topics to topics.yaml's (partition counts stay as"
        " they are: adding partitions would move keys)",
    )
    apply.add_argument("--json", action="store_true", help="print JSON")
    apply.set_defaults(func=_apply)

    listing = actions.add_parser("list", help="list the declared topics with their settings")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)


def _apply(args: argparse.Namespace) -> int:
    if args.replication_factor is not None and args.replication_factor < 1:
        raise SystemExit("convmesh: error: --replication-factor must be at least 1")
    report = asyncio.run(
        apply_topics(settings_from(args), args.replication_factor, args.fix_configs)
    )
    if args.json:
        print_json(
            {
                "created": report.created,
                "unchanged": report.unchanged,
                "drift": report.drift,
                "fixed": report.fixed,
            }
        )
    else:
        for name in report.created:
            print(f"created    {name}")
        for name in report.fixed:
            print(f"fixed      {name}")
        for name in report.unchanged:
            if name not in report.drift:
                print(f"unchanged  {name}")
        for name, problems in report.drift.items():
            for problem in problems:
                print(f"DRIFT      {name}: {problem}")
        print(
            f"{len(report.created)} created, {len(report.unchanged)} existing, "
            f"{len(report.drift)} drifted, {len(report.fixed)} fixed"
        )
    return 1 if args.strict and report.drift else 0


def _list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    rows = []
    for spec in all_specs(settings):
        name = real_name(spec, settings.topic_name)
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "partitions": spec.partitions,
                "replication_factor": spec.replication_factor,
                "cleanup": spec.cleanup,
                "retention_ms": spec.retention_ms,
            }
        )
    if args.json:
        print_json(rows)
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            retention = "forever" if r["retention_ms"] == -1 else f"{r['retention_ms']} ms"
            print(
                f"{r['name']:<{width}}  {r['kind']:<9} p={r['partitions']:<3} "
                f"rf={r['replication_factor']}  {r['cleanup']:<14} {retention}"
            )
    return 0
