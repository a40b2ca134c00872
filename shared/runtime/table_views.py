"""Operator views of a service's RocksDB tables, safe to show.

``GET /tables/<table>?limit=&after=`` lists the rows this worker holds, a page
at a time; ``GET /tables/<table>/lookup?key=<key>`` answers one key, from the
worker that owns the key's partition (Faust forwards the request, with its
operator token, from the partition assignor's metadata; with one worker it
is local). ``GET /partitions`` says which partitions this worker holds.

Nothing identifying is shown: a key is shown as a truncated keyed hash
(``h:<16 hex>``, HMAC under the newest pseudonym key) unless the table's keys
are known to be ad account data, and every string of a value is hashed the
same way unless its field is on the list of fields known to be safe
(``SAFE_FIELDS``: account, campaign and event names, statuses, types,
dates...). Numbers and booleans are shown. An operator token is required.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.exceptions import SameNode

from shared.kafka.partitioner import partition_of
from shared.runtime.settings import Settings
from shared.runtime.web_auth import operator_page

HASH_PREFIX = "h:"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Fields whose string values are never user data: shown as they are.
SAFE_FIELDS = frozenset(
    {
        "ad_account_id",
        "campaign_id",
        "ad_group_id",
        "ad_id",
        "event_name",
        "action_source",
        "source",
        "status",
        "unidentified_reason",
        "type",
        "key_type",
        "op",
        "date",
        "day",
        "level",
        "lane",
        "scope",
        "currency",
        "service",
        "kind",
        "reason",
    }
)


#: A dict key that looks like one of our field names is shown; any other (a
#: conversion_key in a map of members, say) is data, and hashed.
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}").fullmatch

#: Maps keyed by codes rather than data, and the field their values are read
#: as: a report row's exact sums by currency (``{"USD": [members, "12.50"]}``).
CODE_KEYED_MAPS = {"sums": "sum"}
_CURRENCY_CODE = re.compile(r"[A-Z]{3}").fullmatch
#: Fields whose strings are shown only when they are a decimal number (a sum
#: kept as a string to stay exact); any other string there is hashed.
DECIMAL_FIELDS = frozenset({"sum"})
_DECIMAL = re.compile(r"-?[0-9]{1,60}(\.[0-9]{1,60})?").fullmatch


class PageError(ValueError):
    """A listing query that cannot be answered (bad limit)."""


def truncated_hash(data: bytes | str, secret: str) -> str:
    """``h:`` and the first 16 hex digits of HMAC-SHA256(secret, data): not reversible
    without the key, stable across calls (so a listing can be paged and compared)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    digest = hmac.new(f"table-view\x1f{secret}".encode(), raw, hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest[:16]


def display_key(key: bytes, secret: str, *, safe: bool) -> str:
    """How a table key is shown: itself for a table of account data, else a hash."""
    if safe:
        return key.decode("utf-8", "replace")
    return truncated_hash(key, secret)


def redact(value: Any, secret: str, field: str | None = None) -> Any:
    """``value`` with every string outside ``SAFE_FIELDS`` replaced by its hash.

    A string inside a list keeps the field name of the list. A dict key is
    shown when it looks like a field name of ours, hashed otherwise; in a map
    of ``CODE_KEYED_MAPS`` a currency code is shown too, its value read as the
    map's field (a decimal sum is shown, any other string hashed).
    """
    if isinstance(value, dict):
        if field in CODE_KEYED_MAPS:
            return {
                (k if _CURRENCY_CODE(k) else truncated_hash(k, secret)): redact(
                    v, secret, CODE_KEYED_MAPS[field] if _CURRENCY_CODE(k) else None
                )
                for k, v in value.items()
            }
        return {
            (k if _FIELD_NAME(k) else truncated_hash(k, secret)): redact(v, secret, k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secret, field) for v in value]
    if isinstance(value, str):
        return value if shown_as_is(value, field) else truncated_hash(value, secret)
    return value


def shown_as_is(text: str, field: str | None) -> bool:
    """A string of a safe field, or a decimal number in a field of sums."""
    return field in SAFE_FIELDS or (field in DECIMAL_FIELDS and _DECIMAL(text) is not None)


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int = DEFAULT_LIMIT
    after: str | None = None


def parse_page_query(query: Mapping[str, str]) -> PageQuery:
    """``limit`` (1..MAX_LIMIT, default DEFAULT_LIMIT) and ``after`` (a shown key)."""
    raw = query.get("limit")
    try:
        limit = DEFAULT_LIMIT if raw in (None, "") else int(str(raw))
    except ValueError as exc:
        raise PageError("limit must be an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise PageError(f"limit must be between 1 and {MAX_LIMIT}")
    return PageQuery(limit, query.get("after") or None)


def page(
    items: Iterable[tuple[bytes, bytes]], query: PageQuery, secret: str, *, safe_keys: bool
) -> dict[str, Any]:
    """One page of a table, ordered by shown key; ``next`` is the ``after`` of the next page.

    Paging is by the shown key (a hash for most tables), so the cursor itself
    reveals nothing either.
    """
    shown = sorted(
        (display_key(key, secret, safe=safe_keys), raw) for key, raw in items if raw is not None
    )
    if query.after is not None:
        shown = [(key, raw) for key, raw in shown if key > query.after]
    rows = [
        {"key": key, "value": redact(orjson.loads(raw), secret)}
        for key, raw in shown[: query.limit]
    ]
    more = len(shown) > query.limit
    return {"rows": rows, "next": rows[-1]["key"] if more and rows else None}


def owner_of(partition: int, assignment: Mapping[str, Iterable[int]]) -> str | None:
    """The worker (its URL) whose assignment holds ``partition``, if any does."""
    for url, held in sorted(assignment.items()):
        if partition in set(held):
            return url
    return None


#: The key a table key's partition is chosen by, when it is not the key itself.
PartitionKey = Callable[[str], str]


def register_table_views(
    app: faust.App,
    settings: Settings,
    *tables: str,
    safe_keys: Iterable[str] = (),
    partition_keys: Mapping[str, PartitionKey] | None = None,
) -> None:
    """The listing and lookup views of ``tables`` (names of ``app.tables``).

    ``partition_keys`` names, per table, how to read the key its partition is
    chosen by out of a table key (a watcher's identifier, a report row's ad
    account): a lookup is routed to the worker holding that partition.
    """
    safe = frozenset(safe_keys)
    by_table = dict(partition_keys or {})

    def secret() -> str:
        keys = settings.active_pseudonym_keys
        return keys[0][1] if keys else settings.active_operator_token

    for name in tables:
        partition_key = by_table.get(name, _itself)
        _register_table(app, settings, name, name in safe, secret, partition_key)
    _register_assignment(app, settings)


def _itself(key: str) -> str:
    return key


def _register_table(
    app: faust.App,
    settings: Settings,
    name: str,
    safe_keys: bool,
    secret: Any,
    partition_key: PartitionKey,
) -> None:
    table: Any = app.tables[name]
    partitions = int(table.partitions or app.conf.topic_partitions)

    @operator_page(app, settings, f"/tables/{name}")
    async def listing(web: Any, request: Any) -> Any:
        try:
            query = parse_page_query(dict(request.query))
        except PageError as exc:
            return web.json({"error": str(exc)}, status=400)
        body = page(table.items(), query, secret(), safe_keys=safe_keys)
        body.update(table=name, service=settings.service, worker=settings.worker)
        return web.json(body)

    @operator_page(app, settings, f"/tables/{name}/lookup")
    async def lookup(web: Any, request: Any) -> Any:
        key = request.query.get("key")
        if not key:
            return web.json({"error": "key is required"}, status=400)
        try:
            # Faust forwards the request, token included, to the worker that
            # holds the partition of the key it is given; there it is local.
            routed: Any = await app.router.route_req(table.name, partition_key(key), web, request)
            return routed
        except SameNode:
            return answer(web, key)

    def answer(web: Any, text: str) -> Any:
        key = text.encode()
        raw = table.get(key)
        shown = display_key(key, secret(), safe=safe_keys)
        body = {
            "table": name,
            "key": shown,
            "partition": partition_of(partition_key(text).encode(), partitions),
            "worker": settings.worker,
            "found": raw is not None,
            "value": redact(orjson.loads(raw), secret()) if raw is not None else None,
        }
        return web.json(body, status=200 if raw is not None else 404)

    del listing, lookup


def _register_assignment(app: faust.App, settings: Settings) -> None:
    if getattr(app, "convmesh_assignment_view", False):
        return
    app.convmesh_assignment_view = True  # type: ignore[attr-defined]

    @operator_page(app, settings, "/partitions")
    async def assignment(web: Any, request: Any) -> Any:
        held: dict[str, list[int]] = {}
        if app._consumer is not None:
            for tp in app.consumer.assignment():
                held.setdefault(tp.topic, []).append(tp.partition)
        return web.json(
            {
                "service": settings.service,
                "worker": settings.worker,
                "url": settings.web_url,
                "partitions": {t: sorted(p) for t, p in sorted(held.items())},
            }
        )

    del assignment
