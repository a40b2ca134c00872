"""The reference model: the contract's rules computed directly, as the e2e oracle.

Written from docs/contracts.md and conversions-api.md only; it imports nothing
from ``services/`` (independence is the point). ``reference(records)`` takes the
input records ``(topic, key, value)`` of one run in production order (registry
topic names: conversions.raw, ads.engagements, identity.signals,
privacy.requests) and returns :class:`Expected`: the latest
``conversions.attributed`` value per conversion_key (without ``version`` and
``processed_at_ms``), the ``reports.conversions`` rows, and the per-source
counts.

Readings chosen where the contract leaves room (each also a test):

* Validation is a minimal, independent reading of the API rules (unknown fields
  in the event, custom_data and contents[] items are errors, in user_data they
  are ignored, as the spec's schema forbids them only in the others; an
  envelope whose ``source`` is missing counts as ``topic``; a record that is not
  a JSON object, or whose source is not one of the four, counts under
  ``unreadable_source``, default ``topic``; ``received_at_ms`` missing means
  ``now_ms``) plus the envelope rules of docs/reason-codes.md (unknown envelope
  field, record key = ad_account_id bytes, missing event). The bounds are
  inclusive for the valid side: exactly 1 h in the future and exactly 67 days
  old are valid (the contract rejects "more than").
* Deduplication compares an event with EVERY earlier accepted event of its key
  (``|dt| <= window`` is a duplicate, so exactly 172800 s is a duplicate). A key
  accepted again outside the window supersedes: the result of the key is that
  of the LAST accepted event in arrival order (even if its event_time is
  earlier). Order = order of the records of conversions.raw as given.
* Time comparisons use T = ``event_time * 1000`` against ``ts_ms``.
* A key's signals are those with the same ``key_type`` and ``key``; for
  ``external_id`` only the signals whose ``ad_account_id`` is the conversion's
  account are folded (a separate history per account); ``ad_account_id`` of
  other key types is ignored. ``ip_ua``: the key resolves only if the ``link``
  that set the current pointer has ``T - ts_ms <= 7 days`` (a later link of the
  same user renews it).
* ``click_id`` resolves to the user of the ``click`` engagement (type click)
  with that click_id and ``ts_ms <= T``, of any ad account; if several, the
  latest ts_ms, then the greatest engagement_id.
* ``match.key_type`` is the identity.signals vocabulary: ``click_id``,
  ``external_id``, ``em``, ``ph``, ``hashed_maid`` (parameter ``maid_key_type``),
  ``ip_ua``.
* ``match.user``: the pseudonym of the user in the conversion's ad account,
  computed from the internal user id
  (``pseudonym(ad_account_id, internal_user(user_id, identifier_key), keys)``).
* Restricted: ``opt_out`` is checked before ``ldp``, both before matching (no
  match is reported). ``opt_out_type`` is split on commas; an item equal to
  ``LDP`` (trimmed, case-insensitive) restricts. ``user_opt_out``: the matched
  user's latest privacy request by ts_ms over ALL requests (not only those
  before the event; equal ts_ms: the later arrival wins) is ``opt_out``
  (``privacy_as_of_event_time=True`` switches to requests with ts_ms <= T).
  Requests of kind ``delete`` are not modelled (ValueError).
* ``no_identifiers``: no click_id, no external_id/em/ph/hashed_maids values and
  no ip+ua pair (cannot happen for a valid event); else ``no_match``.
* Attribution: windows in days per class, a window of 0 turns the class off;
  engagement ids compare as strings.
* ``value``: ``float(Decimal(value))`` or None; reports sum values exactly with
  Decimal per currency; a conversion with a value but no currency adds no value.
  ``date`` is the UTC day of event_time. Unattributed / unidentified rows have
  null campaign, ad group and ad. Rows with 0 conversions do not exist (an
  actual row with 0 conversions is ignored by :meth:`Expected.diff_reports`).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from shared.contract.keys import internal_user, ip_ua_hash
from shared.contract.pseudonyms import pseudonym
from shared.runtime.settings import Settings

DAY_MS = 86_400_000
IP_UA_VALIDITY_MS = 7 * DAY_MS
DEFAULT_WINDOWS_DAYS: Mapping[str, int] = {"click": 30, "engagement": 30, "view": 1}
CLASS_RANK: Mapping[str, int] = {"click": 3, "engagement": 2, "view": 1}
SOURCES = ("api", "tag", "topic", "batch")

EVENT_NAMES = frozenset(
    "add_payment_info add_to_cart add_to_wishlist app_install app_open checkout contact custom "
    "customize_product find_location initiate_checkout lead page_visit schedule search signup "
    "start_trial submit_application subscribe view_category view_content watch_video".split()
)
ACTION_SOURCES = frozenset({"app_android", "app_ios", "web", "offline"})
_REQUIRED = ("event_name", "action_source", "event_time", "event_id", "user_data")
_EVENT_FIELDS = frozenset(
    {
        *_REQUIRED,
        "event_source_url",
        "partner_name",
        "language",
        "opt_out",
        "wifi",
        "app_id",
        "app_name",
        "app_version",
        "device_brand",
        "device_carrier",
        "device_model",
        "device_type",
        "os_version",
        "app_info",
        "device_info",
        "custom_data",
    }
)
_HASHED = (
    "em",
    "ph",
    "ge",
    "db",
    "ln",
    "fn",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "hashed_maids",
)
_CUSTOM_FIELDS = frozenset(
    {
        "currency",
        "value",
        "content_ids",
        "content_name",
        "content_category",
        "content_brand",
        "contents",
        "num_items",
        "order_id",
        "search_string",
        "opt_out_type",
        "np",
        "predicted_ltv",
        "external_measurement_id",
        "external_measurement_vendor_id",
    }
)
_CONTENT_FIELDS = frozenset(
    {"id", "item_price", "quantity", "item_name", "item_category", "item_brand"}
)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]+)?|\.[0-9]+)")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_ACCOUNT = re.compile(r"[0-9]{1,18}")

MATCH_ORDER = ("click_id", "external_id", "em", "ph", "hashed_maids", "ip_ua")


# ------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RawOutcome:
    """What became of one conversions.raw record (index = its position on the topic)."""

    index: int
    outcome: str  # accepted | duplicate | rejected
    source: str
    ad_account_id: str | None
    conversion_key: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class Expected:
    #: conversion_key -> the latest conversions.attributed value, minus version and
    #: processed_at_ms
    attributed: dict[str, dict[str, Any]]
    #: (ad_account_id, campaign_id, ad_group_id, ad_id, event_name, attribution_type, date)
    #: -> {"conversions": int, "value": {currency: Decimal}}
    reports: dict[tuple[Any, ...], dict[str, Any]]
    #: source -> {"received", "accepted", "duplicates", "rejected"}
    counts: dict[str, dict[str, int]]
    #: one per conversions.raw record, in topic order
    outcomes: list[RawOutcome] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(c["accepted"] for c in self.counts.values())

    def report_rows(self) -> dict[tuple[Any, ...], tuple[int, dict[str, float]]]:
        """The expected rows in comparable form (see :func:`comparable_row`)."""
        return {
            rid: (row["conversions"], _money(row["value"])) for rid, row in self.reports.items()
        }

    def diff_attributed(self, actual: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Differences between the pipeline's latest record per key and the expectation.

        ``actual``: conversion_key -> latest conversions.attributed value (version
        and processed_at_ms are ignored; ``value`` compared rounded to 6 places).
        """
        problems: list[str] = []
        for key in sorted(set(self.attributed) | set(actual)):
            want, got = self.attributed.get(key), actual.get(key)
            if want is None:
                problems.append(f"{key}: unexpected result {dict(got or {})}")
                continue
            if got is None:
                problems.append(f"{key}: missing (expected {want})")
                continue
            got_cmp = {k: v for k, v in got.items() if k not in ("version", "processed_at_ms")}
            for name in sorted(set(want) | set(got_cmp)):
                a, b = want.get(name, "<absent>"), got_cmp.get(name, "<absent>")
                if name == "value" and isinstance(a, float) and isinstance(b, int | float):
                    same = round(a, 6) == round(float(b), 6)
                else:
                    same = a == b
                if not same:
                    problems.append(f"{key}: {name}: expected {a!r}, got {b!r}")
        return problems

    def diff_reports(self, actual_rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Differences between reports.conversions row VALUES and the expectation.

        ``actual_rows``: the latest value of every row key (tombstones left out).
        Rows with 0 conversions are ignored; values compare rounded to 6 places,
        with currencies whose sum is 0 left out.
        """
        got: dict[tuple[Any, ...], tuple[int, dict[str, float]]] = {}
        problems: list[str] = []
        for row in actual_rows:
            rid, cmp = comparable_row(row)
            if cmp[0] == 0:
                continue
            if rid in got:
                problems.append(f"{rid}: two rows with the same fields")
            got[rid] = cmp
        want = self.report_rows()
        for rid in sorted(set(want) | set(got), key=lambda r: tuple(str(x) for x in r)):
            if want.get(rid) != got.get(rid):
                problems.append(f"{rid}: expected {want.get(rid)}, got {got.get(rid)}")
        return problems


ROW_FIELDS = (
    "ad_account_id",
    "campaign_id",
    "ad_group_id",
    "ad_id",
    "event_name",
    "attribution_type",
    "date",
)


def comparable_row(row: Mapping[str, Any]) -> tuple[tuple[Any, ...], tuple[int, dict[str, float]]]:
    """A reports.conversions value as (row id, (conversions, {currency: rounded sum}))."""
    rid = tuple(row.get(f) for f in ROW_FIELDS)
    return rid, (int(row["conversions"]), _money(row.get("value") or {}))


def _money(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for cur, v in values.items():
        r = round(float(v), 6)
        if r != 0:
            out[cur] = r
    return out


# ---------------------------------------------------------------- validation


class _Invalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Conversion:
    ad_account_id: str
    source: str
    event_name: str
    event_id: str
    action_source: str
    event_time: int
    scope: str
    value: Decimal | None
    currency: str | None
    click_id: str | None
    ids: Mapping[str, tuple[str, ...]]  # external_id, em, ph, hashed_maids
    ip_ua: str | None
    opt_out: bool
    ldp: bool

    @property
    def key(self) -> str:
        return f"{self.ad_account_id}:{self.event_name}:{self.event_id}:{self.scope}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_ENVELOPE_FIELDS = frozenset({"ad_account_id", "source", "received_at_ms", "event"})


def parse_raw(
    value: bytes | None,
    now_ms: int,
    key: bytes | None = None,
    *,
    check_key: bool = True,
    unreadable_source: str = "topic",
) -> tuple[str, str | None, Conversion | None, str]:
    """(source bucket, ad_account_id or None, conversion or None, reason or "").

    Envelope rules: a JSON object with only ad_account_id (1-18 digits), source
    (one of the four; missing or null means topic), received_at_ms (a
    non-negative integer; missing or null means ``now_ms``) and event; the
    record key must be the bytes of ad_account_id (``check_key``: the topic is
    partitioned by ad account).
    """
    if value is None:
        return unreadable_source, None, None, "empty_record"
    try:
        env = orjson.loads(value)
    except orjson.JSONDecodeError:
        return unreadable_source, None, None, "invalid_json"
    if not isinstance(env, dict):
        return unreadable_source, None, None, "not_an_object"
    raw_source = env.get("source")
    source = "topic" if raw_source is None else raw_source
    source = source if source in SOURCES else unreadable_source
    acct = env.get("ad_account_id")
    acct = acct if isinstance(acct, str) and _ACCOUNT.fullmatch(acct) else None
    try:
        if set(env) - _ENVELOPE_FIELDS:
            raise _Invalid("unknown_envelope_field")
        if raw_source is not None and raw_source not in SOURCES:
            raise _Invalid("invalid_source")
        if acct is None:
            raise _Invalid("invalid_ad_account_id")
        if check_key and key != acct.encode():
            raise _Invalid("key_mismatch")
        received = env.get("received_at_ms")
        received = now_ms if received is None else received
        if not _is_int(received) or received < 0:
            raise _Invalid("invalid_received_at_ms")
        if env.get("event") is None:
            raise _Invalid("missing_event")
        return source, acct, _event(acct, source, received, env["event"]), ""
    except _Invalid as exc:
        return source, acct, None, exc.reason


def _event(acct: str, source: str, received: int, ev: Any) -> Conversion:
    if not isinstance(ev, dict):
        raise _Invalid("event_not_object")
    for name in _REQUIRED:
        if ev.get(name) is None:
            raise _Invalid("missing_required_field")
    if set(ev) - _EVENT_FIELDS:
        raise _Invalid("unknown_field")
    if ev["event_name"] not in EVENT_NAMES:
        raise _Invalid("invalid_event_name")
    if ev["action_source"] not in ACTION_SOURCES:
        raise _Invalid("invalid_action_source")
    t = ev["event_time"]
    if not _is_int(t):
        raise _Invalid("invalid_event_time")
    if t >= 10**11:
        raise _Invalid("event_time_in_milliseconds")
    if t * 1000 - received > 3_600_000:
        raise _Invalid("event_time_in_future")
    if received - t * 1000 > 67 * DAY_MS:
        raise _Invalid("event_time_too_old")
    if not isinstance(ev["event_id"], str) or not ev["event_id"].strip():
        raise _Invalid("invalid_event_id")
    if ev.get("opt_out") is not None and not isinstance(ev["opt_out"], bool):
        raise _Invalid("invalid_field_type")
    ud = ev["user_data"]
    if not isinstance(ud, dict):
        raise _Invalid("invalid_field_type")
    hashed: dict[str, tuple[str, ...]] = {}
    for name in _HASHED:
        arr = ud.get(name)
        if arr is None:
            arr = []
        if isinstance(arr, str) and not _HEX64.fullmatch(arr):
            raise _Invalid("unhashed_identifier")  # one plaintext value, not an array
        if not isinstance(arr, list):
            raise _Invalid("invalid_field_type")
        for h in arr:
            if not isinstance(h, str) or not _HEX64.fullmatch(h):
                raise _Invalid("unhashed_identifier")
        hashed[name] = tuple(h.lower() for h in arr)
    ip, ua = ud.get("client_ip_address"), ud.get("client_user_agent")
    has_pair = isinstance(ip, str) and bool(ip) and isinstance(ua, str) and bool(ua)
    if not (hashed["em"] or hashed["hashed_maids"] or has_pair):
        raise _Invalid("missing_user_identifiers")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise _Invalid("invalid_client_ip_address") from None
    click_id = ud.get("click_id")
    if click_id is not None and not isinstance(click_id, str):
        raise _Invalid("invalid_field_type")
    custom = ev.get("custom_data")
    if custom is None:
        custom = {}
    if not isinstance(custom, dict):
        raise _Invalid("invalid_field_type")
    if set(custom) - _CUSTOM_FIELDS:
        raise _Invalid("unknown_field")
    for item in custom.get("contents") or []:
        if not isinstance(item, dict):
            raise _Invalid("invalid_field_type")
        if set(item) - _CONTENT_FIELDS:
            raise _Invalid("unknown_field")
    value: Decimal | None = None
    if custom.get("value") is not None:
        raw_value = custom["value"]
        if not isinstance(raw_value, str) or not _DECIMAL.fullmatch(raw_value.strip()):
            raise _Invalid("invalid_value")
        try:
            value = Decimal(raw_value.strip())
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise _Invalid("invalid_value") from None
    currency = custom.get("currency")
    if currency is not None and (
        not isinstance(currency, str) or not _CURRENCY.fullmatch(currency)
    ):
        raise _Invalid("invalid_currency")
    opt_type = custom.get("opt_out_type")
    ldp = isinstance(opt_type, str) and any(p.strip().upper() == "LDP" for p in opt_type.split(","))
    action_source = ev["action_source"]
    return Conversion(
        ad_account_id=acct,
        source=source,
        event_name=ev["event_name"],
        event_id=ev["event_id"],
        action_source=action_source,
        event_time=t,
        scope="offline" if action_source == "offline" else "online",
        value=value,
        currency=currency,
        click_id=click_id or None,
        ids={k: hashed[k] for k in ("external_id", "em", "ph", "hashed_maids")},
        ip_ua=ip_ua_hash(ip, ua) if has_pair else None,
        opt_out=ev.get("opt_out") is True,
        ldp=ldp,
    )


# ------------------------------------------------------------------ context


@dataclass(slots=True)
class _Context:
    #: (key_type, key) -> [(ts_ms, arrival, op, user_id, ad_account_id)], in fold order
    signals: dict[tuple[str, str], list[tuple[int, int, str, str, str | None]]]
    #: click_id -> [engagement]
    clicks: dict[str, list[dict[str, Any]]]
    #: user_id -> [engagement]
    engagements: dict[str, list[dict[str, Any]]]
    #: user_id -> [(ts_ms, arrival, kind)]
    privacy: dict[str, list[tuple[int, int, str]]]


def _context(records: Sequence[tuple[str, bytes | None, bytes]]) -> _Context:
    signals: dict[tuple[str, str], list[tuple[int, int, str, str, str | None]]] = defaultdict(list)
    clicks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    engagements: dict[str, list[dict[str, Any]]] = defaultdict(list)
    privacy: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for arrival, (topic, _key, value) in enumerate(records):
        if topic == "identity.signals":
            s = orjson.loads(value)
            signals[(s["key_type"], s["key"])].append(
                (s["ts_ms"], arrival, s["op"], s["user_id"], s.get("ad_account_id"))
            )
        elif topic == "ads.engagements":
            e = orjson.loads(value)
            engagements[e["user_id"]].append(e)
            if e["type"] == "click" and e.get("click_id"):
                clicks[e["click_id"]].append(e)
        elif topic == "privacy.requests":
            p = orjson.loads(value)
            if p["kind"] == "delete":
                raise ValueError("privacy requests of kind 'delete' are not modelled")
            privacy[p["user_id"]].append((p["ts_ms"], arrival, p["kind"]))
    for history in signals.values():
        history.sort(key=lambda s: (s[0], s[1]))
    return _Context(dict(signals), dict(clicks), dict(engagements), dict(privacy))


def fold(
    history: Iterable[tuple[int, int, str, str, str | None]],
    t_ms: int,
    ad_account_id: str | None = None,
) -> tuple[str, int] | None:
    """What a key points at as of ``t_ms``: (user_id, ts_ms of the link) or None.

    ``history`` is in fold order (ts_ms, then arrival). With ``ad_account_id``
    only that account's signals count (external_id).
    """
    current: tuple[str, int] | None = None
    for ts, _arrival, op, user, acct in history:
        if ts > t_ms:
            break
        if ad_account_id is not None and acct != ad_account_id:
            continue
        if op == "link":
            current = (user, ts)
        elif op == "unlink" and current is not None and current[0] == user:
            current = None
    return current


def _resolve(ctx: _Context, conv: Conversion, maid_key_type: str) -> tuple[str, str] | None:
    """(key_type reported in match, user_id) of the first identifier that resolves."""
    t_ms = conv.event_time * 1000
    if conv.click_id is not None:
        found = [e for e in ctx.clicks.get(conv.click_id, []) if e["ts_ms"] <= t_ms]
        if found:
            best = max(found, key=lambda e: (e["ts_ms"], str(e["engagement_id"])))
            return "click_id", best["user_id"]
    for field_name, signal_type, scoped in (
        ("external_id", "external_id", True),
        ("em", "em", False),
        ("ph", "ph", False),
        ("hashed_maids", "hashed_maid", False),
    ):
        for key in conv.ids[field_name]:
            hit = fold(
                ctx.signals.get((signal_type, key), ()),
                t_ms,
                conv.ad_account_id if scoped else None,
            )
            if hit is not None:
                return (maid_key_type if field_name == "hashed_maids" else signal_type), hit[0]
    if conv.ip_ua is not None:
        hit = fold(ctx.signals.get(("ip_ua", conv.ip_ua), ()), t_ms)
        if hit is not None and t_ms - hit[1] <= IP_UA_VALIDITY_MS:
            return "ip_ua", hit[0]
    return None


def _opted_out(ctx: _Context, user_id: str, t_ms: int | None) -> bool:
    requests = [r for r in ctx.privacy.get(user_id, []) if t_ms is None or r[0] <= t_ms]
    if not requests:
        return False
    return max(requests, key=lambda r: (r[0], r[1]))[2] == "opt_out"


def _touch(
    ctx: _Context, conv: Conversion, user_id: str, windows_days: Mapping[str, int]
) -> dict[str, Any] | None:
    t_ms = conv.event_time * 1000
    best: dict[str, Any] | None = None
    best_key: tuple[int, int, str] | None = None
    for e in ctx.engagements.get(user_id, []):
        if e["ad_account_id"] != conv.ad_account_id:
            continue
        days = windows_days.get(e["type"], 0)
        if days <= 0 or e["ts_ms"] > t_ms or t_ms - e["ts_ms"] > days * DAY_MS:
            continue
        k = (CLASS_RANK[e["type"]], e["ts_ms"], str(e["engagement_id"]))
        if best_key is None or k > best_key:
            best, best_key = e, k
    if best is None:
        return None
    return {
        "engagement_id": best["engagement_id"],
        "campaign_id": best["campaign_id"],
        "ad_group_id": best["ad_group_id"],
        "ad_id": best["ad_id"],
        "type": best["type"],
        "ts_ms": best["ts_ms"],
    }


def attribute_one(
    ctx: _Context,
    conv: Conversion,
    *,
    pseudonym_keys: tuple[tuple[str, str], ...],
    identifier_key: str,
    windows_days: Mapping[str, int],
    maid_key_type: str,
    privacy_as_of_event_time: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "conversion_key": conv.key,
        "ad_account_id": conv.ad_account_id,
        "event_id": conv.event_id,
        "event_name": conv.event_name,
        "action_source": conv.action_source,
        "source": conv.source,
        "event_time": conv.event_time,
        "value": float(conv.value) if conv.value is not None else None,
        "currency": conv.currency,
        "status": "unidentified",
        "unidentified_reason": None,
        "match": None,
        "touch": None,
    }
    if conv.opt_out:
        result["unidentified_reason"] = "opt_out"
        return result
    if conv.ldp:
        result["unidentified_reason"] = "ldp"
        return result
    if conv.click_id is None and conv.ip_ua is None and not any(conv.ids.values()):
        result["unidentified_reason"] = "no_identifiers"
        return result
    hit = _resolve(ctx, conv, maid_key_type)
    if hit is None:
        result["unidentified_reason"] = "no_match"
        return result
    key_type, user_id = hit
    t_ms = conv.event_time * 1000
    if _opted_out(ctx, user_id, t_ms if privacy_as_of_event_time else None):
        result["unidentified_reason"] = "user_opt_out"
        return result
    # Scoped by the conversion's ad account: another account sees another pseudonym.
    # Of the internal user id: no raw user id goes into the pipeline.
    user = pseudonym(conv.ad_account_id, internal_user(user_id, identifier_key), pseudonym_keys)
    result["match"] = {"key_type": key_type, "user": user}
    touch = _touch(ctx, conv, user_id, windows_days)
    result["status"] = "attributed" if touch is not None else "unattributed"
    result["touch"] = touch
    return result


# --------------------------------------------------------------------- main


def reference(
    records: Iterable[tuple[str, bytes | None, bytes]],
    *,
    dedup_window_s: int = 172_800,
    pseudonym_keys: tuple[tuple[str, str], ...] | None = None,
    identifier_key: str | None = None,
    now_ms: int | None = None,
    windows: Mapping[str, Mapping[str, int]] | None = None,
    maid_key_type: str = "hashed_maid",
    privacy_as_of_event_time: bool = False,
    check_key: bool = True,
    unreadable_source: str = "topic",
) -> Expected:
    """The contract's results over ``records`` (production order).

    ``pseudonym_keys``, ``identifier_key``: default the development keys (the
    tests run in development mode).
    ``windows``: ad_account_id -> {class: days}, missing classes/accounts take the
    defaults (click 30, engagement 30, view 1). ``now_ms`` stands for the Kafka
    timestamp of an envelope without ``received_at_ms`` (default 0: such an
    event is then "in the future" unless you pass it). ``unreadable_source``: the
    per-source bucket of a record whose source cannot be read (not JSON, not an
    object, an invalid source). ``check_key``: reject a record whose key is not
    the bytes of its ad_account_id (``key_mismatch``).
    """
    keys = (
        pseudonym_keys
        if pseudonym_keys is not None
        else Settings(dev_mode=True).active_pseudonym_keys
    )
    id_key = (
        identifier_key
        if identifier_key is not None
        else Settings(dev_mode=True).active_identifier_key
    )
    records = [tuple(r) for r in records]
    ctx = _context(records)  # type: ignore[arg-type]
    counts: dict[str, dict[str, int]] = {}
    outcomes: list[RawOutcome] = []
    accepted_times: dict[str, list[int]] = defaultdict(list)
    latest: dict[str, Conversion] = {}
    raw_index = 0
    for topic, key, value in records:
        if topic != "conversions.raw":
            continue
        source, acct, conv, reason = parse_raw(
            value,
            now_ms if now_ms is not None else 0,
            key,
            check_key=check_key,
            unreadable_source=unreadable_source,
        )
        row = counts.setdefault(
            source, {"received": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
        )
        row["received"] += 1
        if conv is None:
            row["rejected"] += 1
            outcomes.append(RawOutcome(raw_index, "rejected", source, acct, None, reason))
        else:
            times = accepted_times[conv.key]
            if any(abs(conv.event_time - t) <= dedup_window_s for t in times):
                row["duplicates"] += 1
                outcomes.append(RawOutcome(raw_index, "duplicate", source, acct, conv.key))
            else:
                times.append(conv.event_time)
                latest[conv.key] = conv
                row["accepted"] += 1
                outcomes.append(RawOutcome(raw_index, "accepted", source, acct, conv.key))
        raw_index += 1

    attributed: dict[str, dict[str, Any]] = {}
    reports: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, conv in latest.items():
        wins = {**DEFAULT_WINDOWS_DAYS, **((windows or {}).get(conv.ad_account_id) or {})}
        result = attribute_one(
            ctx,
            conv,
            pseudonym_keys=keys,
            identifier_key=id_key,
            windows_days=wins,
            maid_key_type=maid_key_type,
            privacy_as_of_event_time=privacy_as_of_event_time,
        )
        attributed[key] = result
        touch = result["touch"]
        if result["status"] == "attributed":
            rid = (
                conv.ad_account_id,
                touch["campaign_id"],
                touch["ad_group_id"],
                touch["ad_id"],
                conv.event_name,
                touch["type"],
                utc_date(conv.event_time),
            )
        else:
            rid = (
                conv.ad_account_id,
                None,
                None,
                None,
                conv.event_name,
                result["status"],
                utc_date(conv.event_time),
            )
        row = reports.setdefault(rid, {"conversions": 0, "value": {}})
        row["conversions"] += 1
        if conv.value is not None and conv.currency is not None:
            row["value"][conv.currency] = row["value"].get(conv.currency, Decimal(0)) + conv.value
    return Expected(attributed, reports, counts, outcomes)


def utc_date(event_time: int) -> str:
    return datetime.fromtimestamp(event_time, UTC).date().isoformat()
