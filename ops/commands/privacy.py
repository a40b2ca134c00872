"""`convmesh privacy release|budget`: the protected lane's releases and ledger.

``release`` sends a request on privacy.releases that the aggregate service
consumes (with --ad-account: to that account; without: to every partition,
each expanding it to its own accounts). ``budget`` reads privacy.ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

import orjson
from aiokafka import AIOKafkaProducer

from ops.commands.common import add_data_dir, print_json, settings_from
from shared.contract.errors import ConvmeshError
from shared.kafka.client_config import client_kwargs
from shared.kafka.topic_io import latest_by_key, partitions_of, read_all
from shared.runtime.settings import Settings

RELEASE_EXAMPLE = """example:
  convmesh privacy release --before 2026-11-27 --ad-account 549755885175
  (releases every not-yet-released date before 2026-11-27 at once, closed or not;
  each still costs its ε and is refused when the week's budget is spent)"""
BUDGET_EXAMPLE = """example:
  convmesh privacy budget --ad-account 549755885175 --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("privacy", help="protected-lane releases and privacy budget")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    release = actions.add_parser(
        "release",
        help="release every not-yet-released date before a day",
        epilog=RELEASE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    release.add_argument("--before", required=True, help="YYYY-MM-DD: dates before this day")
    release.add_argument("--ad-account", default=None, help="one ad account (default: all)")
    add_data_dir(release)
    release.set_defaults(func=_release)

    budget = actions.add_parser(
        "budget",
        help="an ad account's privacy ledger, per ISO week",
        epilog=BUDGET_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    budget.add_argument("--ad-account", required=True, help="the ad account id (digits)")
    budget.add_argument("--json", action="store_true", help="print JSON")
    add_data_dir(budget)
    budget.set_defaults(func=_budget)


def _release(args: argparse.Namespace) -> int:
    try:
        before = dt.date.fromisoformat(args.before).isoformat()
    except ValueError:
        raise ConvmeshError("--before must be a date YYYY-MM-DD") from None
    if args.ad_account is not None and not args.ad_account.isdigit():
        raise ConvmeshError("--ad-account must be digits")
    settings = settings_from(args)
    request = {
        "op": "release",
        "ad_account_id": args.ad_account,
        "before": before,
        "requested_at_ms": int(time.time() * 1000),
    }
    sent = asyncio.run(send_request(settings, request))
    who = (
        f"ad account {args.ad_account}"
        if args.ad_account
        else f"all ad accounts ({sent} partitions)"
    )
    print(f"requested the release of every date before {before} for {who}")
    return 0


async def send_request(settings: Settings, request: dict[str, object]) -> int:
    """One request keyed by its account, or one per partition for every account."""
    topic = settings.topic_name("privacy.releases")
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        value = orjson.dumps(request)
        account = request["ad_account_id"]
        if isinstance(account, str):
            await (await producer.send(topic, value, key=account.encode()))
            return 1
        partitions = await partitions_of(settings, topic)
        if not partitions:
            raise ConvmeshError(f"topic {topic} does not exist: is the aggregate service up?")
        for partition in partitions:
            await (await producer.send(topic, value, key=b"*", partition=partition))
        return len(partitions)
    finally:
        await producer.stop()


def _budget(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    reads = asyncio.run(read_all(settings, settings.topic_name("privacy.ledger")))
    prefix = f"{args.ad_account}:"
    weeks = [v for k, v in sorted(latest_by_key(reads).items()) if k.startswith(prefix)]
    if args.json:
        print_json(weeks)
        return 0
    if not weeks:
        print(f"no release charged or refused for ad account {args.ad_account}")
    for week in weeks:
        print(
            f"{week['week']}: spent {week['spent']:g} of {week['budget']:g}"
            f"  released {', '.join(week['released']) or '-'}"
            f"  refused {', '.join(week['refused']) or '-'}"
        )
    return 0
