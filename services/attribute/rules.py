"""Attribution rules of the contract, as pure steps over one key's state.

The intake step (``forward_user_event``) replaces a raw user id by the internal
one; every ``user_id`` after it is internal, pseudonyms are computed from it.

The ``users`` steps (state per internal user id, ``services.attribute.state.User``):
``on_engagement``, ``on_assign``, ``on_retract``, ``on_privacy_request`` and
``on_delete`` take the user's state and one input and return the new state and
the records to send (``Send``): a result for the publisher whenever a
conversion's outcome changes. The ``published`` steps (state per
conversion_key): ``on_result`` and ``on_scrub`` return what the publisher
writes to conversions.attributed; ``aggregate_inputs`` what the new record
changes in aggregate's reports (reports.deltas, diagnostics.facts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from itertools import chain
from typing import Any

import orjson

from services.attribute.state import (
    Assigned,
    Concerned,
    Engagement,
    PrivacyChoice,
    Published,
    User,
)
from shared.contract.errors import InvalidEvent
from shared.contract.keys import ad_account_of, internal_user, lane_user
from shared.contract.limits import (
    ALLOWED_WINDOW_DAYS,
    DAY_MS,
    DEFAULT_WINDOWS_DAYS,
    ENGAGEMENT_RETENTION_MS,
    MAX_BACKFILL_MS,
)
from shared.contract.pseudonyms import (
    DELETED_USERS_SCOPE,
    PseudonymKeys,
    pseudonym,
    pseudonyms,
    unscoped_pseudonyms,
)
from shared.contract.records import Send, attributed_record
from shared.contract.report_deltas import sends_of_result
from shared.contract.versions import next_stamp
from shared.values import value_class

CLASS_RANK: Mapping[str, int] = {"click": 3, "engagement": 2, "view": 1}
RESULTS = "attribution.results"
USER_EVENTS = "attribution.user_events"
#: The fields of an engagement the users state needs: no click id.
ENGAGEMENT_FIELDS = (
    "engagement_id",
    "user_id",
    "ad_account_id",
    "campaign_id",
    "ad_group_id",
    "ad_id",
    "type",
    "ts_ms",
)
DELETED = "privacy.deleted"
RECEIPTS = "privacy.receipts"

#: The attribution windows (ms per class) of an ad account.
WindowsOf = Callable[[str], Mapping[str, int]]
#: A users step: the user's new state and what to send.
Step = tuple[User, list[Send]]


# ------------------------------------------------------------------ intake


def forward_user_event(
    topic: str, event: Mapping[str, Any], arrival: tuple[int, int], identifier_key: str
) -> Send:
    """An ads.engagements or privacy.requests input, re-keyed by the internal user id.

    The users state is keyed by the internal id (attribution.assignments is):
    the input must reach that partition, with no raw user id and no click id.
    ``arrival`` is the input's (partition, offset): privacy requests are ordered
    by (ts_ms, offset) in their input topic, whatever the forwarding did (a
    forwarder restarted after a crash may write one input twice).
    """
    user = internal_user(event["user_id"], identifier_key)
    if topic == "ads.engagements":
        kept = {f: event.get(f) for f in ENGAGEMENT_FIELDS}
    else:
        kept = {f: event.get(f) for f in ("request_id", "user_id", "kind", "ts_ms")}
    kept["user_id"] = user
    return Send(USER_EVENTS, user, {"topic": topic, "event": kept, "arrival": list(arrival)})


@value_class(frozen=True, slots=True)
class Context:
    """What a users step needs besides the state and the input."""

    #: The internal user id (``shared.contract.keys.internal_user``).
    user_id: str
    #: Pseudonym keys (kid, secret), newest first.
    keys: PseudonymKeys
    windows_of: WindowsOf
    #: The worker's wall clock: the floor of every stamp issued.
    now_ms: int
    #: The identifier key (``shared.contract.keys.lane_user``).
    identifier_key: str


def windows_ms(days: Mapping[str, int] | None = None) -> dict[str, int]:
    """Windows in ms from days per class (missing classes take the defaults)."""
    days = dict(DEFAULT_WINDOWS_DAYS, **(days or {}))
    for kind, value in days.items():
        if value not in ALLOWED_WINDOW_DAYS:
            raise ValueError(f"window for {kind} must be one of {sorted(ALLOWED_WINDOW_DAYS)}")
    return {kind: value * DAY_MS for kind, value in days.items()}


DEFAULT_WINDOWS_MS: Mapping[str, int] = windows_ms()


def default_windows(_ad_account_id: str) -> Mapping[str, int]:
    return DEFAULT_WINDOWS_MS


def parse_account_settings(raw: bytes) -> Mapping[str, int]:
    """An accounts.settings value -> the account's windows in ms (ValueError if invalid)."""
    doc = orjson.loads(raw)
    days = doc.get("windows") if isinstance(doc, dict) else None
    if not isinstance(days, dict) or not set(days) <= set(DEFAULT_WINDOWS_DAYS):
        raise ValueError("windows must map click / engagement / view to days")
    return windows_ms(days)


# ------------------------------------------------------------- last touch


def is_candidate(
    eng: Engagement, ad_account_id: str, event_time: int, windows: Mapping[str, int]
) -> bool:
    window = windows.get(eng.type, 0)
    at_ms = event_time * 1000
    return (
        eng.ad_account_id == ad_account_id
        and window > 0
        and eng.ts_ms <= at_ms
        and at_ms - eng.ts_ms <= window
    )


def best_touch(
    engagements: Mapping[str, Engagement],
    ad_account_id: str,
    event_time: int,
    windows: Mapping[str, int],
) -> dict[str, Any] | None:
    """Last touch: class priority click > engagement > view, then latest ts, then greatest id."""
    best: tuple[int, int, str] | None = None
    best_eng: Engagement | None = None
    for engagement_id, eng in engagements.items():
        if not is_candidate(eng, ad_account_id, event_time, windows):
            continue
        rank = (CLASS_RANK[eng.type], eng.ts_ms, engagement_id)
        if best is None or rank > best:
            best, best_eng = rank, eng
    if best is None or best_eng is None:
        return None
    return {
        "engagement_id": best[2],
        "campaign_id": best_eng.campaign_id,
        "ad_group_id": best_eng.ad_group_id,
        "ad_id": best_eng.ad_id,
        "type": best_eng.type,
        "ts_ms": best_eng.ts_ms,
    }


def user_opted_out(user: User) -> bool:
    return user.privacy is not None and user.privacy.kind == "opt_out"


def evaluate(user: User, entry: Assigned, windows_of: WindowsOf) -> dict[str, Any]:
    """The outcome of one assigned conversion under the user's current state."""
    conv = entry.conv
    if user_opted_out(user):
        return {"status": "unidentified", "reason": "user_opt_out", "touch": None}
    windows = windows_of(conv["ad_account_id"])
    touch = best_touch(user.engagements, conv["ad_account_id"], conv["event_time"], windows)
    return {"status": "attributed" if touch else "unattributed", "reason": None, "touch": touch}


# ------------------------------------------------------------ users steps


def _signature(outcome: Mapping[str, Any]) -> tuple[Any, ...]:
    touch = outcome["touch"]
    return (outcome["status"], outcome["reason"], touch["engagement_id"] if touch else None)


def result_message(entry: Assigned, outcome: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """The attribution.results message of one outcome: the user only as a
    pseudonym, scoped by the conversion's ad account."""
    matched = outcome["status"] != "unidentified"
    account = entry.conv["ad_account_id"]
    user = pseudonym(account, ctx.user_id, ctx.keys)
    match = {"key_type": entry.key_type, "user": user}
    return {
        "conv": entry.conv,
        "status": outcome["status"],
        "reason": outcome["reason"],
        "touch": outcome["touch"],
        "match": match if matched else None,
        # The protected lane's unit, for the publisher's deltas only (never published);
        # only an attributed conversion joins the lane.
        "lane_user": (
            lane_user(account, ctx.user_id, ctx.identifier_key)
            if outcome["status"] == "attributed"
            else None
        ),
        "order": [entry.mv, entry.seq],
    }


def reevaluate(user: User, keys: Iterable[str], ctx: Context, *, force: bool = False) -> Step:
    """Re-evaluate some assigned conversions; a result for each one that changed.

    The result's ``order`` is ``[mv, seq]``: the match decision first, then
    the re-attribution stamp (``shared.contract.versions``), which outranks every
    earlier one even when a crash made this user's state recompute. The first
    result of an assignment (``force``) is stamped too: recomputed after a
    crash with the engagements read in another order, it can differ.
    """
    convs = dict(user.convs)
    sends = []
    for key in keys:
        entry = convs[key]
        outcome = evaluate(user, entry, ctx.windows_of)
        signature = _signature(outcome)
        if not force and signature == entry.sig:
            continue
        entry = replace(entry, seq=next_stamp(entry.seq, ctx.now_ms), sig=signature)
        convs[key] = entry
        sends.append(Send(RESULTS, key, result_message(entry, outcome, ctx)))
    return replace(user, convs=convs), sends


def engagement_of(eng: Mapping[str, Any]) -> tuple[str, Engagement]:
    """An engagement's id and the fields attribution keeps of it."""
    row = Engagement(
        int(eng["ts_ms"]),
        eng["type"],
        eng["ad_account_id"],
        eng.get("campaign_id"),
        eng.get("ad_group_id"),
        eng.get("ad_id"),
    )
    return str(eng["engagement_id"]), row


def on_engagement(user: User, eng: Mapping[str, Any], ctx: Context) -> Step:
    """Record an engagement (once per id); re-attribute the conversions it may change."""
    engagement_id, row = engagement_of(eng)
    if engagement_id in user.engagements:
        return user, []
    user = replace(user, engagements={**user.engagements, engagement_id: row})
    windows = ctx.windows_of(row.ad_account_id)
    touched = [
        key
        for key, entry in user.convs.items()
        if is_candidate(row, entry.conv["ad_account_id"], entry.conv["event_time"], windows)
    ]
    return reevaluate(user, touched, ctx)


def on_assign(user: User, msg: Mapping[str, Any], ctx: Context, expires_ms: int) -> Step:
    """A conversion joins this user; nothing if the assignment is stale or repeated."""
    key = msg["conversion_key"]
    current = user.convs.get(key)
    if current is not None and current.mv >= msg["mv"]:
        return user, []
    entry = Assigned(msg["conv"], msg["mv"], 0, msg["key_type"], None, expires_ms)
    named = user.named if key in user.named else (*user.named, key)
    user = replace(user, convs={**user.convs, key: entry}, named=named)
    return reevaluate(user, [key], ctx, force=True)


def on_retract(user: User, msg: Mapping[str, Any]) -> Step:
    """A conversion leaves this user (it now belongs to another, or to nobody)."""
    key = msg["conversion_key"]
    current = user.convs.get(key)
    if current is None or current.mv >= msg["mv"]:
        return user, []
    return replace(user, convs={k: v for k, v in user.convs.items() if k != key}), []


def on_privacy_request(user: User, request: Mapping[str, Any], arrival: int, ctx: Context) -> Step:
    """Keep the latest opt_out / opt_in by ts_ms (ties: arrival); re-evaluate on change."""
    if request.get("kind") not in ("opt_out", "opt_in"):
        return user, []
    new = PrivacyChoice(int(request["ts_ms"]), arrival, request["kind"])
    current = user.privacy
    if current is not None and (current.ts_ms, current.arrival) >= (new.ts_ms, new.arrival):
        return user, []
    user = replace(user, privacy=new)
    return reevaluate(user, list(user.convs), ctx)


def concerned_parts(user: User, kind: str, payload: Mapping[str, Any], ctx: Context) -> Concerned:
    """The parts of the user's state an input may have changed (``state.part_writes``).

    An engagement: itself and the conversions it is a candidate for (those it
    re-evaluates); an assignment: its conversion and its name; a privacy
    choice: every conversion; a retraction removes its conversion (a delete).
    """
    if kind == "ads.engagements":
        engagement_id, row = engagement_of(payload)
        windows = ctx.windows_of(row.ad_account_id)
        touched = frozenset(
            key
            for key, entry in user.convs.items()
            if is_candidate(row, entry.conv["ad_account_id"], entry.conv["event_time"], windows)
        )
        return Concerned(engagements=frozenset({engagement_id}), convs=touched)
    if kind == "privacy.requests":
        return Concerned(convs=frozenset(user.convs))
    if payload.get("op") == "assign":
        key = str(payload["conversion_key"])
        return Concerned(convs=frozenset({key}), named=frozenset({key}))
    return Concerned()


def trim(user: User, now_ms: int) -> User:
    """Drop engagements past every window and conversions past the late horizon.

    Engagements go by the data's time, not only the clock's: as of the user's newest
    engagement or conversion when that is older than ``now_ms``. Events are valid
    relative to their own ``received_at_ms``, so a back-fill or a replay of last
    year's events must keep the engagements its conversions can credit; with live
    events the newest is about now, and the clock decides as before. Never from
    further back than MAX_BACKFILL_MS, so that mis-dated engagements still go.
    Conversions expire by the clock: their horizon is one of processing time.
    """
    as_of = max(min(now_ms, newest_ms(user, now_ms)), now_ms - MAX_BACKFILL_MS)
    oldest = as_of - ENGAGEMENT_RETENTION_MS
    return replace(
        user,
        engagements={k: e for k, e in user.engagements.items() if e.ts_ms >= oldest},
        convs={k: c for k, c in user.convs.items() if c.expires_ms >= now_ms},
    )


def newest_ms(user: User, default: int) -> int:
    """The newest engagement ts_ms or conversion event_time (in ms) of ``user``."""
    engaged = (e.ts_ms for e in user.engagements.values())
    converted = (int(c.conv["event_time"]) * 1000 for c in user.convs.values())
    return max(chain(engaged, converted), default=default)


def named_conversions(user: User) -> list[str]:
    """The conversion keys a user was ever assigned (a deletion scrubs each)."""
    return sorted(set(user.named) | set(user.convs))


def requested_user(key: bytes | None, request: Mapping[str, Any]) -> str:
    """The user a privacy request is for: its key and its ``user_id`` must agree.

    The request acts on the key's state (the partition of the user's data); a
    request whose key is missing or names someone else would wipe or restrict
    the wrong user, or no one at all.
    """
    if key is None or key != request["user_id"].encode():
        raise InvalidEvent("key_mismatch", "the record key is missing or is not the user_id")
    return str(request["user_id"])


def on_delete(user: User, request: Mapping[str, Any], ctx: Context) -> tuple[None, list[Send]]:
    """A deleted user: no state is left (a tombstone), and every conversion that
    named them is scrubbed: the publisher re-emits its record without the user,
    and the conversion's owner in identity_match forgets the user id.

    The user joins the deleted users (``privacy.deleted``) and a receipt says
    attribute's part is done (``privacy.receipts``, if the request has an id).
    """
    sends = []
    named = named_conversions(user)
    for key in named:
        # The account of a conversion no longer in the state is in its key.
        scrub = scrub_message(ad_account_of(key), ctx.user_id, ctx.keys)
        forget = {"op": "forget_user", "conversion_key": key, "user_id": ctx.user_id}
        sends += [Send(RESULTS, key, scrub), Send("identity.answers", key, forget)]
    request_id = request.get("request_id")
    request_id = request_id if isinstance(request_id, str) and request_id else None
    sends.append(deleted_user(ctx, int(request["ts_ms"]), request_id))
    if request_id is not None:
        receipt = {
            "request_id": request_id,
            "service": "attribute",
            "completed_at_ms": ctx.now_ms,
            "conversions_scrubbed": len(named),
        }
        sends.append(Send(RECEIPTS, request_id, receipt))
    return None, sends


def deleted_user(ctx: Context, requested_at_ms: int, request_id: str | None) -> Send:
    """The privacy.deleted record of a user deleted now.

    Keyed by the user's one pseudonym across accounts (newest key). Deleted
    up to the later of the request's ts_ms and now: everything this deletion
    wiped from the state is at or before it.
    """
    user = pseudonym(DELETED_USERS_SCOPE, ctx.user_id, ctx.keys)
    deleted_at_ms = max(requested_at_ms, ctx.now_ms)
    value = {"user": user, "deleted_at_ms": deleted_at_ms, "request_id": request_id}
    return Send(DELETED, user, value)


def deleted_keys(user_id: str, keys: PseudonymKeys) -> tuple[str, ...]:
    """The privacy.deleted keys a user may have: one per key, newest first."""
    return pseudonyms(DELETED_USERS_SCOPE, user_id, keys)


def parse_deleted(raw: bytes) -> int:
    """A privacy.deleted value -> the time up to which the user is deleted (ms)."""
    return int(orjson.loads(raw)["deleted_at_ms"])


def input_time_ms(kind: str, payload: Mapping[str, Any]) -> int | None:
    """When a users input happened (ms): an engagement's or a privacy request's
    ts_ms, an assigned conversion's event_time; None for a retraction."""
    if kind == "attribution.assignments":
        if payload.get("op") != "assign":
            return None
        return int(payload["conv"]["event_time"]) * 1000
    return int(payload["ts_ms"])


def predates_deletion(at_ms: int | None, deleted_at_ms: int | None) -> bool:
    """Whether an input is of a deleted user from before the deletion.

    Such an input (a replay, a late record) is dropped: it must not bring the
    user back. Inputs after the deletion are new data.
    """
    return at_ms is not None and deleted_at_ms is not None and at_ms <= deleted_at_ms


def on_assign_of_deleted_user(msg: Mapping[str, Any], ctx: Context, expires_ms: int) -> list[Send]:
    """An assignment to a deleted user, of a conversion from before the deletion.

    identity_match still resolved one of the conversion's identifiers to the user: a
    replayed record, or a link the deletion missed (indexed for the user just after
    the deletion reached the index). The conversion must not go without a result, nor
    bring the user back. So, and nothing stored:

    * its result, as the deletion's scrub would leave it: by the rules over none of
      the user's engagements (all deleted), ``match.user`` null. Its order is
      ``[mv, 0]``, below every result of that ``mv`` the publisher may have: so it is
      published only for a conversion that has none, never over the scrubbed record
      of a conversion the deletion reached (a replay of its assignment);
    * the conversion's owner forgets the user (as ``on_delete`` asks of every
      conversion that named them).
    """
    if msg.get("op") != "assign":
        return []
    _, sends = on_assign(User(), msg, ctx, expires_ms)
    key = msg["conversion_key"]
    out = [
        Send(s.topic, s.key, without_user(s.value, int(msg["mv"])))
        if s.topic == RESULTS and isinstance(s.value, dict)
        else s
        for s in sends
    ]
    forget = {"op": "forget_user", "conversion_key": key, "user_id": ctx.user_id}
    out.append(Send("identity.answers", key, forget))
    return out


def without_user(result: dict[str, Any], mv: int) -> dict[str, Any]:
    match = result.get("match")
    match = {**match, "user": None} if isinstance(match, dict) else match
    return {**result, "match": match, "lane_user": None, "order": [mv, 0]}


# -------------------------------------------------------- publisher steps

ATTRIBUTED = "conversions.attributed"


def is_newer(order: Iterable[int], published: Published | None) -> bool:
    """Whether a result of this ``[mv, seq]`` order replaces the published one."""
    return published is None or tuple(order) > tuple(published.order)


def on_result(
    published: Published | None, conversion_key: str, result: Mapping[str, Any], now_ms: int
) -> tuple[Published | None, list[Send]]:
    """A candidate result: published only if its order is higher than the last one's.

    Nothing to send means it was not newer (the state is returned unchanged).
    """
    if not is_newer(result["order"], published):
        return published, []
    record = attributed_record(
        conversion_key,
        result["conv"],
        status=result["status"],
        reason=result["reason"],
        match=result.get("match"),
        touch=result.get("touch"),
        # A stamp: grows even if this table came back older after a crash.
        version=next_stamp(published.record["version"] if published else None, now_ms),
        processed_at_ms=now_ms,
    )
    mv, seq = result["order"]
    return Published((mv, seq), record), [Send(ATTRIBUTED, conversion_key, record)]


def aggregate_inputs(
    last: Published | None, record: Mapping[str, Any], lane_user: str | None = None
) -> list[Send]:
    """What a newly published record tells aggregate: its report deltas and its fact.

    The publisher knows the record it replaces, so it also says which row (and
    lane stratum and bucket) the conversion leaves and joins
    (``shared.contract.report_deltas``). ``lane_user``: the result's unit of
    the protected lane (``result_message``).
    """
    return sends_of_result(last.record if last is not None else None, record, lane_user)


def scrubbed(last: Mapping[str, Any], users: Collection[str], at_ms: int) -> dict[str, Any] | None:
    """The published record re-emitted without a deleted user, if it names them.

    ``users``: the user's pseudonyms under every key (a record published
    before a key rotation carries an older one).
    """
    match = last.get("match")
    if not match or match.get("user") not in users:
        return None
    version = next_stamp(last["version"], at_ms)
    return {**last, "match": {**match, "user": None}, "version": version, "processed_at_ms": at_ms}


def scrub_message(ad_account_id: str, user_id: str, keys: PseudonymKeys) -> dict[str, Any]:
    """What the publisher needs to scrub a deleted user from one account's record.

    Every pseudonym the record may carry: the user's in that account under
    every key in force (newest first), and the unscoped ones of before
    pseudonyms were scoped by account.
    """
    users = pseudonyms(ad_account_id, user_id, keys) + unscoped_pseudonyms(user_id, keys)
    return {"op": "scrub", "users": list(users)}


def on_scrub(
    published: Published | None, conversion_key: str, scrub: Mapping[str, Any], now_ms: int
) -> tuple[Published | None, list[Send]]:
    """A deleted user: re-emit the published record without them, if it names them."""
    if published is None:
        return None, []
    # {"user": p} is the scrub of before key rotations were handled.
    users = scrub["users"] if "users" in scrub else [scrub["user"]]
    record = scrubbed(published.record, users, now_ms)
    if record is None:
        return published, []
    return replace(published, record=record), [Send(ATTRIBUTED, conversion_key, record)]
