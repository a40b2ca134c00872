"""`convmesh tokens create|revoke|list`: conversion tokens of the HTTP API.

A new token is printed once and never stored: ``api.tokens`` (compacted, keyed by
token id) holds only a salted hash, in a record signed with ``CONVMESH_TOKEN_SECRET``
(readers drop records without a valid signature). Every ingest worker follows that topic, so a
created or revoked token takes effect on all of them within a second or so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time

from ops.commands.common import add_data_dir, print_json, settings_from
from shared.contract.errors import ConvmeshError
from shared.kafka.api_tokens import (
    is_ad_account_id,
    is_token_id,
    load_tokens,
    new_token,
    publish_record,
    record_view,
    signing_secret,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokens", help="create, revoke or list API conversion tokens")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a token for one ad account (printed once)")
    create.add_argument("--ad-account", required=True, help="the ad account id (digits)")
    create.add_argument("--json", action="store_true", help="print JSON")
    add_data_dir(create)
    create.set_defaults(func=_create)

    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the id shown by create and list")
    add_data_dir(revoke)
    revoke.set_defaults(func=_revoke)

    listing = actions.add_parser("list", help="list tokens (ids and ad accounts, never secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_data_dir(listing)
    listing.set_defaults(func=_list)


def _create(args: argparse.Namespace) -> int:
    if not is_ad_account_id(args.ad_account):
        raise ConvmeshError("--ad-account must be 1 to 18 digits")
    settings = settings_from(args)
    signing_secret(settings)  # refuse before anything is written
    token, record = new_token(args.ad_account)
    asyncio.run(publish_record(settings, record))
    if args.json:
        print_json({"token": token, "token_id": record.token_id, "ad_account_id": args.ad_account})
    else:
        print(token)
        print(
            f"token id {record.token_id} for ad account {record.ad_account_id}; "
            "this is the only time the token is shown",
            file=sys.stderr,
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if not is_token_id(args.token_id):
        raise ConvmeshError("TOKEN_ID is the 12 hex digits shown by `convmesh tokens list`")
    settings = settings_from(args)
    signing_secret(settings)
    store = asyncio.run(load_tokens(settings))
    record = store.get(args.token_id)
    if record is None:
        raise ConvmeshError(f"no token with id {args.token_id}")
    if record.revoked:
        print(f"token {args.token_id} was already revoked")
        return 0
    asyncio.run(publish_record(settings, record.revoke(int(time.time() * 1000))))
    print(f"revoked token {args.token_id} of ad account {record.ad_account_id}")
    return 0


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(args: argparse.Namespace) -> int:
    store = asyncio.run(load_tokens(settings_from(args)))
    rows = [record_view(r) for r in store.records()]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'TOKEN_ID':<14}{'AD_ACCOUNT':<20}{'CREATED':<22}STATUS")
    for row in rows:
        status = f"revoked {_when(row['revoked_at_ms'])}" if row["revoked"] else "active"
        print(
            f"{row['token_id']:<14}{row['ad_account_id']:<20}"
            f"{_when(row['created_at_ms']):<22}{status}"
        )
    return 0
