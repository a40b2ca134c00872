"""`convmesh accounts`: per ad account settings (attribution windows).

    convmesh accounts set-windows --ad-account 549755885175 --click 7 --view 0
    convmesh accounts list

Windows are days per class, each one of 0, 1, 7, 14, 30, 60 (0 turns the class
off); a class not given keeps the default (click 30, engagement 30, view 1).
They apply to conversions attributed after every attribute worker has read
them; results already published are not recomputed.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

from ops.commands.common import print_json
from services.attribute.rules import DEFAULT_WINDOWS_DAYS, windows_ms
from shared.kafka.topic_io import latest_by_key, produce, read_all
from shared.runtime.errors import ConfigError
from shared.runtime.settings import Settings

TOPIC = "accounts.settings"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("accounts", help="ad account settings (attribution windows)")
    commands = parser.add_subparsers(dest="accounts_command", required=True)
    set_windows = commands.add_parser("set-windows", help="set an account's attribution windows")
    set_windows.add_argument("--ad-account", required=True)
    for kind in DEFAULT_WINDOWS_DAYS:
        set_windows.add_argument(f"--{kind}", type=int, default=None, metavar="DAYS")
    set_windows.set_defaults(func=_set_windows)
    listing = commands.add_parser("list", help="show every account's settings")
    listing.set_defaults(func=_list)


def windows_record(ad_account_id: str, days: dict[str, int | None]) -> dict[str, object]:
    if not ad_account_id.isdigit() or len(ad_account_id) > 18:
        raise ConfigError("--ad-account must be digits (at most 18)")
    chosen = {k: v for k, v in days.items() if v is not None}
    try:
        windows_ms(chosen)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return {"ad_account_id": ad_account_id, "windows": {**DEFAULT_WINDOWS_DAYS, **chosen}}


def _set_windows(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    record = windows_record(args.ad_account, {k: getattr(args, k) for k in DEFAULT_WINDOWS_DAYS})
    asyncio.run(
        produce(
            settings,
            [(settings.topic_name(TOPIC), args.ad_account.encode(), orjson.dumps(record))],
        )
    )
    print_json(record)
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    print_json(latest_by_key(asyncio.run(read_all(settings, settings.topic_name(TOPIC)))))
    return 0
