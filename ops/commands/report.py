"""`convmesh report`: an ad account's conversion report from the advertiser API."""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlencode

import orjson
from rich.console import Console

from ops.advertiser import default_url, get, report_table
from ops.commands.common import settings_from

EXAMPLE = """example:
  convmesh report --ad-account 549755885175 --token $TOKEN --from 2025-11-01 --to 2025-11-30 \\
      --level ad_group --lane observed
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print an ad account's report (GET /v5/ad_accounts/{id}/reports)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ad-account", required=True, help="the ad account id (digits)")
    parser.add_argument("--token", required=True, help="the ad account's API token")
    parser.add_argument("--from", dest="start", help="first date, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", help="last date, YYYY-MM-DD")
    parser.add_argument("--level", default="campaign", choices=("campaign", "ad_group", "ad"))
    parser.add_argument("--lane", default="observed", choices=("observed", "protected", "modeled"))
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--url", help="aggregate's base URL (default: its first worker)")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    base = args.url or default_url(settings_from(args))
    params = {"level": args.level, "lane": args.lane}
    params.update({k: v for k, v in (("from", args.start), ("to", args.end)) if v})
    url = f"{base.rstrip('/')}/v5/ad_accounts/{args.ad_account}/reports?{urlencode(params)}"
    text = asyncio.run(get(url, args.token, csv=args.csv))
    if args.csv:
        print(text, end="")
    else:
        Console().print(report_table(orjson.loads(text)))
    return 0
