"""`convmesh diagnostics`: an ad account's setup diagnostics (docs/diagnostics.md)."""

from __future__ import annotations

import argparse
import asyncio

import orjson
from rich.console import Console

from ops.advertiser import default_url, get, print_diagnostics
from ops.commands.common import print_json, settings_from

EXAMPLE = """example:
  convmesh diagnostics --ad-account 549755885175 --token $TOKEN
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diagnostics",
        help="print an ad account's setup diagnostics (last 1, 7, 28 days)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ad-account", required=True, help="the ad account id (digits)")
    parser.add_argument("--token", required=True, help="the ad account's API token")
    parser.add_argument("--url", help="aggregate's base URL (default: its first worker)")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.set_defaults(func=_diagnostics)


def _diagnostics(args: argparse.Namespace) -> int:
    base = args.url or default_url(settings_from(args))
    url = f"{base.rstrip('/')}/v5/ad_accounts/{args.ad_account}/events/diagnostics"
    doc = orjson.loads(asyncio.run(get(url, args.token)))
    if args.json:
        print_json(doc)
    else:
        print_diagnostics(doc, Console())
    return 0
