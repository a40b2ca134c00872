"""`convmesh send FILE`: stream NDJSON or CSV events to the HTTP API or conversions.raw."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ops.commands.common import settings_from
from ops.send.deliver import MAX_BATCH, Tally, deliver
from ops.send.readers import CSV_COLUMNS, read_events
from ops.send.senders import HttpSender, TopicSender
from shared.contract.errors import ConvmeshError

EXAMPLE = """examples:
  convmesh send events.ndjson --url http://127.0.0.1:8080 --token $TOKEN --ad-account 549755885175
  convmesh send events.csv --topic --ad-account 549755885175

CSV columns (header row; empty cells left out; several hashes separated by ';'):
  """ + ", ".join(CSV_COLUMNS)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        help="send an NDJSON or CSV file of events to the API (or conversions.raw)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="NDJSON (one event a line) or CSV")
    parser.add_argument("--ad-account", required=True, help="the ad account id (digits)")
    parser.add_argument("--url", help="the Conversions API base URL (ingest)")
    parser.add_argument("--token", help="the ad account's API token")
    parser.add_argument(
        "--topic", action="store_true", help="produce to conversions.raw instead of the API"
    )
    parser.add_argument("--format", choices=("ndjson", "csv"), help="default: from the suffix")
    parser.add_argument("--batch-size", type=int, default=MAX_BATCH, help="at most 1000")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_send)


def _send(args: argparse.Namespace) -> int:
    if not args.ad_account.isdigit():
        raise ConvmeshError("--ad-account must be digits")
    if not args.file.is_file():
        raise ConvmeshError(f"no such file: {args.file}")
    if not args.topic and not (args.url and args.token):
        raise ConvmeshError("give --url and --token (or --topic)")
    tally = asyncio.run(_run(args))
    print_summary(tally, Console(), topic=args.topic)
    return 1 if tally.rejected else 0


async def _run(args: argparse.Namespace) -> Tally:
    sender: Any = (
        TopicSender(settings_from(args), args.ad_account)
        if args.topic
        else HttpSender(args.url, args.token, args.ad_account)
    )
    progress = Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[events]} events, {task.fields[rejected]} rejected"),
        TimeRemainingColumn(),
        disable=args.no_progress,
    )
    task = progress.add_task("send", total=args.file.stat().st_size, events=0, rejected=0)

    def read(n: int) -> None:
        progress.advance(task, n)

    def batch_done(tally: Tally) -> None:
        progress.update(task, events=tally.sent, rejected=sum(tally.rejected.values()))

    events = read_events(args.file, args.format, on_read=read)
    with progress:
        async with sender:
            return await deliver(events, sender, args.batch_size, on_batch=batch_done)


def print_summary(tally: Tally, console: Console, *, topic: bool = False) -> None:
    console.print(
        f"sent {tally.sent}, accepted {tally.accepted}, rejected {sum(tally.rejected.values())}"
    )
    for reason, count in tally.rejected.most_common():
        console.print(f"  {count:>8}  {reason}")
    if topic:
        console.print("ingest rejects records of the topic asynchronously: see `convmesh dlq`")
