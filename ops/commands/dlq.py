"""`convmesh dlq`: recent rejects of conversions.dlq, grouped by reason."""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

from ops.commands.common import add_data_dir, print_json, settings_from
from ops.dlq import parse_since_s, read_rejects

EXAMPLE = """examples:
  convmesh dlq                       # the last hour
  convmesh dlq --since 7d --reason invalid_event_time
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="show recent rejects grouped by reason (conversions.dlq)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--since", default="1h", help="how far back: 90s, 15m, 1h, 7d (default 1h)")
    parser.add_argument("--reason", help="only this reason code (docs/reason-codes.md)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_data_dir(parser)
    parser.set_defaults(func=_dlq)


def _dlq(args: argparse.Namespace) -> int:
    since_ms = int((time.time() - parse_since_s(args.since)) * 1000)
    rejects = asyncio.run(read_rejects(settings_from(args), since_ms, args.reason))
    groups = rejects.ordered()
    if args.json:
        print_json(
            [
                {
                    "reason": g.reason,
                    "count": g.count,
                    "ad_accounts": sorted(g.accounts),
                    "message": g.message,
                    "example": g.example,
                }
                for g in groups
            ]
        )
        return 0
    table = Table(title=f"rejects since {args.since} ago ({len(rejects.seen)} inputs)")
    for column in ("reason", "count", "ad accounts", "latest message", "latest example (redacted)"):
        table.add_column(column, overflow="fold")
    for g in groups:
        accounts = ", ".join(sorted(g.accounts)[:3]) + (" …" if len(g.accounts) > 3 else "")
        table.add_row(g.reason, str(g.count), accounts, g.message, g.example or "-")
    Console().print(table)
    return 0
