"""Matching rules of the contract, as pure steps: state and one input in, the
new state and the records to send out.

Three kinds of state, partitioned differently (``services.identity_match.state``):

* per **identifier** (hash or click_id; co-partitioned with identity.lookups):
  the identifier's signal history, the clicks that carry it, and the
  conversions that *watch* it (so a late signal can re-answer them);
* per **conversion_key** (the owner): the accepted conversion, one answer per
  identifier slot, the current match and its ``match_version``;
* per **user_id** (internal): the identifiers the user was seen with (deletion
  follows it).

A conversion's identifiers become *slots* in priority order; each slot is
answered by the partition owning the identifier; the owner combines answers:
the first slot (in order) that resolves to a user wins.

Inside the pipeline an ``ip_ua`` identifier, a click id and a user id are
keyed (``shared.contract.keys``: ``keyed_ip_ua``, ``internal_click``,
``internal_user``): ingest keys the conversion's, and the forwarders
(``forward_signal``, ``forward_click``, ``forward_deletion``) key the inputs'
before they reach any state. Every ``user_id`` below is the internal one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from services.identity_match.state import (
    Click,
    KeyState,
    OwnerState,
    Signal,
    Slot,
    UserIndex,
    Watcher,
    watcher_name,
)
from shared.contract.keys import internal_click, internal_user, keyed_ip_ua
from shared.contract.limits import IP_UA_VALIDITY_MS
from shared.contract.records import Send
from shared.contract.versions import next_stamp
from shared.runtime.key_groups import item_writes

#: Key types in matching priority order, with the conversion field holding them
#: and the signal ``key_type`` they are looked up against.
PRIORITY: tuple[tuple[str, str, str], ...] = (
    ("click_id", "click_id", "click"),
    ("external_id", "external_id", "external_id"),
    ("em", "em", "em"),
    ("ph", "ph", "ph"),
    ("hashed_maid", "hashed_maids", "hashed_maid"),
    ("ip_ua", "ip_ua", "ip_ua"),
)

CLICK_FIELDS = ("click_id", "user_id", "engagement_id", "ts_ms")
SIGNAL_FIELDS = ("user_id", "key_type", "key", "ad_account_id", "op", "ts_ms")


# ------------------------------------------------------------------ re-keying


def internal_key(key_type: str, key: str, identifier_key: str) -> str:
    """The identifier a signal's key is known by inside the pipeline.

    The contract's ip_ua hash is an unsalted SHA-256 of IP and user agent,
    which can be brute-forced: only its keyed form is stored or sent on.
    """
    return keyed_ip_ua(key, identifier_key) if key_type == "ip_ua" else key


def forward_signal(
    signal: Mapping[str, Any], partition: int, offset: int, identifier_key: str
) -> Send:
    """An identity.signals record, re-keyed by its internal identifier.

    The forwarded value keeps the input's position (``arrival``): the keys
    agent orders and recognises signals by it, not by their offset in
    identity.key_signals, where a forwarder restarted after a crash may have
    written the same signal twice.
    """
    key = internal_key(signal["key_type"], signal["key"], identifier_key)
    value = {field: signal.get(field) for field in SIGNAL_FIELDS}
    value["key"] = key
    value["user_id"] = internal_user(signal["user_id"], identifier_key)
    value["arrival"] = [partition, offset]
    return Send("identity.key_signals", key, value)


def forward_click(engagement: Mapping[str, Any], identifier_key: str) -> list[Send]:
    """A click engagement re-keyed by its internal click id (nothing for other engagements).

    Click id and user id go on only in their internal (keyed) forms: the
    conversion's click id was keyed the same way by ingest.
    """
    click_id = engagement.get("click_id")
    if engagement["type"] != "click" or not isinstance(click_id, str):
        return []
    value = {f: engagement[f] for f in CLICK_FIELDS}
    value["click_id"] = internal_click(click_id, identifier_key)
    value["user_id"] = internal_user(engagement["user_id"], identifier_key)
    return [Send("identity.clicks", value["click_id"], value)]


def forward_deletion(request: Mapping[str, Any], identifier_key: str) -> list[Send]:
    """A delete request re-keyed by the internal user id (nothing for other kinds).

    The user index is keyed by the internal id (identity.user_keys): the
    request must reach the same partition, and carries no raw user id.
    """
    if request["kind"] != "delete":
        return []  # opt-out and opt-in concern attribute only
    user = internal_user(request["user_id"], identifier_key)
    request_id = request.get("request_id")
    value = {
        "user_id": user,
        "request_id": request_id if isinstance(request_id, str) else None,
        "ts_ms": request["ts_ms"],
    }
    return [Send("identity.deletions", user, value)]


# --------------------------------------------------------------- conversions


def restriction(conv: Mapping[str, Any]) -> str | None:
    """The unidentified reason a conversion has before any lookup, if any."""
    if conv.get("opt_out"):
        return "opt_out"
    if conv.get("ldp"):
        return "ldp"
    return None


def slots(conv: Mapping[str, Any]) -> tuple[Slot, ...]:
    """The conversion's identifiers in priority order."""
    ids = conv.get("ids") or {}
    out: list[Slot] = []
    for key_type, field, signal_type in PRIORITY:
        value = ids.get(field)
        if not value:
            continue
        values = value if isinstance(value, list) else [value]
        out.extend(Slot(key_type, signal_type, v) for v in values)
    return tuple(out)


def new_owner_state(conv: Mapping[str, Any], previous: OwnerState | None) -> OwnerState:
    """State of a freshly accepted conversion (possibly superseding an earlier one).

    ``gen`` tells answers for this acceptance from stale ones; ``mv`` (the match
    version) carries over so that versions keep growing under the same key.
    ``dirty``: the new acceptance's result is sent even if it equals the last.
    """
    return OwnerState(
        # The identifiers live on in ``slots``; nothing downstream reads them.
        conv=without_ids(conv),
        gen=previous.gen + 1 if previous else 1,
        mv=previous.mv if previous else 0,
        slots=slots(conv),
        answers={},
        result=None,
        user=previous.user if previous else None,
        dirty=True,
    )


def without_ids(conv: Mapping[str, Any]) -> dict[str, Any]:
    """The conversion's facts without its identifiers (``ids``)."""
    return {k: v for k, v in conv.items() if k != "ids"}


def combine(state: OwnerState) -> dict[str, Any] | None:
    """The match result once every slot has an answer, else None (still waiting).

    Result: ``{"status": "matched", "key_type", "user_id"}`` or
    ``{"status": "unidentified", "reason"}``.
    """
    reason = restriction(state.conv)
    if reason:
        return {"status": "unidentified", "reason": reason}
    if not state.slots:
        return {"status": "unidentified", "reason": "no_identifiers"}
    if len(state.answers) < len(state.slots):
        return None
    for index, slot in enumerate(state.slots):
        user = state.answers.get(str(index))
        if user is not None:
            return {"status": "matched", "key_type": slot.key_type, "user_id": user}
    return {"status": "unidentified", "reason": "no_match"}


def lookup_requests(state: OwnerState, conversion_key: str) -> list[Send]:
    """identity.lookups records asking each identifier's owner to watch it."""
    return [
        Send(
            "identity.lookups",
            slot.identifier,
            {
                "conversion_key": conversion_key,
                "slot": str(index),
                "gen": state.gen,
                "signal_type": slot.signal_type,
                "ad_account_id": state.conv["ad_account_id"],
                "event_time": state.conv["event_time"],
            },
        )
        for index, slot in enumerate(state.slots)
    ]


def on_result(
    state: OwnerState, result: Mapping[str, Any], conversion_key: str, at_ms: int
) -> tuple[OwnerState, list[Send]]:
    """What to send when a conversion's match result is (re)computed.

    A retract to the user that held the conversion before, an assign to the
    matched user, or an unidentified result for the publisher. Nothing when
    the result did not change.

    The match version ``mv`` is a stamp (``shared.contract.versions``): a decision made
    after a crash outranks every decision made before it, even when the
    recomputation took fewer steps than the first run.
    """
    if result == state.result and not state.dirty:
        return state, []
    mv = next_stamp(state.mv, at_ms)
    new_user = result.get("user_id") if result["status"] == "matched" else None
    sends: list[Send] = []
    if state.user is not None and state.user != new_user:
        retract = {"op": "retract", "conversion_key": conversion_key, "mv": mv}
        sends.append(Send("attribution.assignments", state.user, retract))
    if new_user is not None:
        assign = {
            "op": "assign",
            "conversion_key": conversion_key,
            "mv": mv,
            "key_type": result["key_type"],
            # The user's partition needs no identifiers, only the facts (a state
            # stored before the owner dropped them may still hold them).
            "conv": without_ids(state.conv),
        }
        sends.append(Send("attribution.assignments", new_user, assign))
    else:
        unidentified = {
            "conv": without_ids(state.conv),
            "status": "unidentified",
            "reason": result["reason"],
            # Ordered by (mv, seq) against attribute's results (seq 0).
            "order": [mv, 0],
        }
        sends.append(Send("attribution.results", conversion_key, unidentified))
    new = replace(state, mv=mv, result=dict(result), dirty=False, user=new_user)
    return new, sends


def _decide(state: OwnerState, conversion_key: str, now_ms: int) -> tuple[OwnerState, list[Send]]:
    result = combine(state)
    return (state, []) if result is None else on_result(state, result, conversion_key, now_ms)


def on_accepted(
    state: OwnerState | None, conversion_key: str, conv: Mapping[str, Any], now_ms: int
) -> tuple[OwnerState, list[Send]]:
    """A conversions.accepted record: own it, ask its identifiers, decide if it can.

    The same acceptance again (``raw_ref``: a redelivery) changes nothing.
    """
    if state is not None and state.conv["raw_ref"] == conv["raw_ref"]:
        return state, []
    owned = new_owner_state(conv, state)
    lookups = lookup_requests(owned, conversion_key)
    decided, sends = _decide(owned, conversion_key, now_ms)
    return decided, [*lookups, *sends]


def on_answer(
    state: OwnerState | None, conversion_key: str, answer: Mapping[str, Any], now_ms: int
) -> tuple[OwnerState | None, list[Send]]:
    """An identity.answers record: what one slot resolves to; decide if all are in.

    An answer for a superseded acceptance (another ``gen``) is dropped.
    """
    if state is None or answer["gen"] != state.gen:
        return state, []
    answered = replace(state, answers={**state.answers, answer["slot"]: answer["user_id"]})
    return _decide(answered, conversion_key, now_ms)


def on_owner_forget(state: OwnerState | None, user_id: str) -> OwnerState | None:
    """Scrub a deleted user's id and identifiers from a conversion owner's state.

    The conversion is not re-matched; the slots keep their key types (so later
    answers still combine in priority order) but lose the identifier values.
    """
    if state is None:
        return None
    result = state.result
    if result is not None and result.get("user_id") == user_id:
        result = {**result, "user_id": None}
    return replace(
        state,
        conv=without_ids(state.conv),
        slots=tuple(replace(slot, identifier="") for slot in state.slots),
        answers={s: (None if u == user_id else u) for s, u in state.answers.items()},
        user=None if state.user == user_id else state.user,
        result=result,
    )


# --------------------------------------------------------------- identifiers


def fold(
    signals: Iterable[Signal], signal_type: str, ad_account_id: str | None, until_ms: int
) -> tuple[str | None, int | None]:
    """Where a key points as of ``until_ms``: (user_id, ts of the link that set it).

    Signals are folded in (ts_ms, arrival) order; ``link`` points the key at its
    user, ``unlink`` clears it only if it points at that user. ``external_id``
    signals count only for their own ad account.
    """
    user: str | None = None
    since: int | None = None
    for signal in signals:
        if signal.ts_ms > until_ms:
            break
        if signal.key_type != signal_type:
            continue
        if signal_type == "external_id" and signal.ad_account_id != ad_account_id:
            continue
        if signal.op == "link":
            user, since = signal.user_id, signal.ts_ms
        elif signal.op == "unlink" and user == signal.user_id:
            user, since = None, None
    return user, since


def answer(state: KeyState, watcher: Watcher) -> str | None:
    """The user this identifier gives the watching conversion, or None."""
    until_ms = int(watcher.event_time) * 1000
    if watcher.signal_type == "click":
        clicks = [c for c in state.clicks if c.ts_ms <= until_ms]
        best = max(clicks, key=lambda c: (c.ts_ms, c.engagement_id), default=None)
        return best.user_id if best else None
    user, since = fold(state.signals, watcher.signal_type, watcher.ad_account_id, until_ms)
    if user is not None and since is not None and watcher.signal_type == "ip_ua":
        if until_ms - since > IP_UA_VALIDITY_MS:
            return None
    return user


def touched_watchers(state: KeyState, ts_ms: int, now_ms: int) -> list[Watcher]:
    """Watchers a new signal or click at ``ts_ms`` may re-answer (event_time >= ts),
    among those still within their horizon: an expired watch is over, whether or
    not it was pruned yet."""
    return [
        w
        for w in state.watchers.values()
        if int(w.event_time) * 1000 >= ts_ms and w.expires_ms >= now_ms
    ]


def prune_watchers(state: KeyState, now_ms: int) -> KeyState:
    """Forget conversions whose late-data horizon has passed."""
    kept = {name: w for name, w in state.watchers.items() if w.expires_ms >= now_ms}
    return replace(state, watchers=kept) if len(kept) != len(state.watchers) else state


def answers(
    state: KeyState, watchers: Iterable[Watcher], *, always: bool
) -> tuple[KeyState, list[Send]]:
    """Answer records for watchers: every one (``always``) or those that changed.

    Each answered watcher remembers the user it was told (``last``).
    """
    updated = dict(state.watchers)
    sends: list[Send] = []
    for watcher in watchers:
        user = answer(state, watcher)
        if not always and user == watcher.last:
            continue
        updated[watcher.name] = replace(watcher, last=user)
        reply = {
            "conversion_key": watcher.conversion_key,
            "slot": watcher.slot,
            "gen": watcher.gen,
            "user_id": user,
        }
        sends.append(Send("identity.answers", watcher.conversion_key, reply))
    return replace(state, watchers=updated), sends


def _after_new_link(
    before: KeyState, after: KeyState, key: str, user: str, ts_ms: int, now_ms: int
) -> tuple[KeyState, list[Send]]:
    """Index the identifier under its new user; re-answer the watchers it may change.

    A link or click of a user the identifier knows already is indexed again
    when it is the user's earliest here: the user index must see its time, or
    a replayed link from before the user's deletion would hide behind the
    links of the user's return (``on_user_key``).
    """
    index = []
    known = _times_of(before, user)
    if not known or ts_ms < min(known):
        index.append(
            Send("identity.user_keys", user, {"user_id": user, "key": key, "ts_ms": ts_ms})
        )
    answered, replies = answers(after, touched_watchers(after, ts_ms, now_ms), always=False)
    return prune_watchers(answered, now_ms), [*index, *replies]


def _times_of(state: KeyState, user: str) -> list[int]:
    """The times of the user's signals and clicks on this identifier (none: not linked)."""
    times = [s.ts_ms for s in state.signals if s.user_id == user]
    return times + [c.ts_ms for c in state.clicks if c.user_id == user]


def on_lookup(
    state: KeyState, request: Mapping[str, Any], now_ms: int, horizon_ms: int
) -> tuple[KeyState, list[Send]]:
    """An identity.lookups request: watch the identifier and answer at once.

    The watch lasts the late-data horizon: a late signal or click re-answers it.
    """
    watcher = Watcher(
        conversion_key=request["conversion_key"],
        slot=request["slot"],
        gen=request["gen"],
        signal_type=request["signal_type"],
        ad_account_id=request.get("ad_account_id"),
        event_time=request["event_time"],
        last=None,
        expires_ms=now_ms + horizon_ms,
    )
    watched = replace(state, watchers={**state.watchers, watcher.name: watcher})
    answered, replies = answers(watched, [watcher], always=True)
    return prune_watchers(answered, now_ms), replies


def on_signal(
    state: KeyState, key: str, signal: Mapping[str, Any], now_ms: int
) -> tuple[KeyState, list[Send]]:
    """An identity.key_signals record: fold it into the identifier's history.

    A signal already folded (same ``arrival``: a redelivery, or a second
    forward after a crash) changes nothing.
    """
    arrival = int(signal["arrival"][1])
    if any(s.arrival == arrival for s in state.signals):
        return state, []
    new = Signal(
        int(signal["ts_ms"]),
        arrival,
        signal["op"],
        signal["user_id"],
        signal["key_type"],
        signal.get("ad_account_id"),
    )
    history = tuple(sorted((*state.signals, new), key=lambda s: (s.ts_ms, s.arrival)))
    after = replace(state, signals=history)
    return _after_new_link(state, after, key, new.user_id, new.ts_ms, now_ms)


def on_click(
    state: KeyState, key: str, click: Mapping[str, Any], now_ms: int
) -> tuple[KeyState, list[Send]]:
    """An identity.clicks record: one more click carrying this click_id.

    A click already known (same engagement_id) changes nothing.
    """
    if any(c.engagement_id == click["engagement_id"] for c in state.clicks):
        return state, []
    new = Click(int(click["ts_ms"]), click["user_id"], click["engagement_id"])
    after = replace(state, clicks=(*state.clicks, new))
    return _after_new_link(state, after, key, new.user_id, new.ts_ms, now_ms)


def on_forget(
    state: KeyState, key: str, user_id: str, up_to_ms: int | None = None
) -> tuple[KeyState | None, list[Send]]:
    """A forget_user lookup: remove a deleted user's signals and clicks here.

    Conversions that resolved to the user through this identifier are not
    re-matched (the contract re-emits them with ``match.user = null``); their
    owners are told to forget the user (identity.answers). An identifier left
    without any link is deleted whole (None), watchers included: the
    identifier itself belonged to the deleted user.

    With ``up_to_ms`` (the deletion's time: sent by the user index for a link
    it learnt of after the deletion, ``on_user_key``) only the user's signals
    and clicks at or before it go. A later one is the user's
    return, new data: it stays, still answers what it answers, and is indexed
    again under its time. A conversion from after that time that a forgotten
    link answered (a replay that reached it before its forget) gets a plain
    answer instead, and is decided again: no deleted link may keep it.
    """

    def forgotten(owner: str, ts_ms: int) -> bool:
        return owner == user_id and (up_to_ms is None or ts_ms <= up_to_ms)

    signals = tuple(s for s in state.signals if not forgotten(s.user_id, s.ts_ms))
    clicks = tuple(c for c in state.clicks if not forgotten(c.user_id, c.ts_ms))
    held = [w for w in state.watchers.values() if w.last == user_id]
    # A conversion from after up_to_ms: a later link may still answer it; one it
    # does not is answered again (and decided again). One from before it no link
    # left here can answer: scrubbed.
    later = [w for w in held if up_to_ms is not None and int(w.event_time) * 1000 > up_to_ms]
    left, sends = answers(KeyState(signals, clicks, state.watchers), later, always=False)
    watchers = dict(left.watchers)
    answered_again = {w.name for w in later}
    for watcher in held:
        if watcher.name in answered_again:
            continue
        watchers[watcher.name] = replace(watcher, last=None)
        owner = watcher.conversion_key
        scrub = {"op": "forget_user", "conversion_key": owner, "user_id": user_id}
        sends.append(Send("identity.answers", owner, scrub))
    if not (signals or clicks):
        return None, sends
    if kept := _times_of(left, user_id):
        value = {"user_id": user_id, "key": key, "ts_ms": max(kept)}
        sends.append(Send("identity.user_keys", user_id, value))
    return KeyState(signals, clicks, watchers), sends


#: One lookup in this many (chosen by its conversion key, so a redelivery
#: chooses the same) reads all of its identifier's watchers and prunes the
#: expired ones; the others read only their own watcher. Signals, clicks and
#: forgets always read them all.
SWEEP_ONE_LOOKUP_IN = 32


def reads_every_watcher(kind: str, payload: Mapping[str, Any]) -> bool:
    """Whether an input needs all of its identifier's watchers, or only its own.

    A lookup answers only its own watcher: reading every watcher of a hot
    identifier (thousands behind a carrier NAT) for each one would cost the
    identifier's size per lookup. Expired watchers are still pruned by a
    deterministic one lookup in ``SWEEP_ONE_LOOKUP_IN`` and by every signal or click.
    """
    if kind != "lookup":
        return True
    return zlib.crc32(str(payload["conversion_key"]).encode()) % SWEEP_ONE_LOOKUP_IN == 0


def concerned_watchers(kind: str, payload: Mapping[str, Any]) -> Callable[[Watcher], bool]:
    """The watchers an input may have changed, whether or not it changes them now.

    A redelivered input (after a kill -9) finds its effect in the local store,
    where a write may be kept whose changelog record never left: the watchers
    it may have changed are written again, as every other value an input
    touches is (StateCache.rewrite). A lookup concerns its own watcher, a
    signal or click those at or after its time (``touched_watchers``), a
    forget every watcher of the identifier.
    """
    if kind == "lookup":
        own = watcher_name(payload["conversion_key"], payload["slot"])
        return lambda w: w.name == own
    if kind in ("signal", "click"):
        ts_ms = int(payload["ts_ms"])
        return lambda w: int(w.event_time) * 1000 >= ts_ms
    return lambda w: True


def watcher_writes(
    stored: Mapping[str, Watcher],
    new: KeyState | None,
    concerned: Callable[[Watcher], bool],
) -> tuple[dict[str, Watcher], list[str]]:
    """What to write to the ``watchers`` table: (watchers to put, by name; names to delete).

    ``stored`` are the identifier's watchers as the table has them. A watcher
    is put when it is new or changed (a watcher of the old layout, kept in the
    ``keys`` value, is new to the table) or when the input concerns it; one
    the table has and ``new`` has not (pruned, or the identifier deleted) is
    deleted.
    """
    watchers = new.watchers if new is not None else {}
    again = {name for name, watcher in watchers.items() if concerned(watcher)}
    writes = item_writes(stored, watchers, again)
    return dict(writes.puts), list(writes.deletes)


# ---------------------------------------------------------------- user index


def on_user_key(
    index: UserIndex, deleted_at_ms: int | None, record: Mapping[str, Any]
) -> tuple[UserIndex, list[Send]]:
    """An identity.user_keys record: the user was seen with one more identifier.

    For a user deleted before (``deleted_at_ms``: the index's marker), a link
    at or before the deletion is a replay, or a link that raced the deletion
    (indexed just after it, so its forget never went): the identifier is told
    to forget the user's links up to that time instead, and nothing is
    indexed. A later link is the user's return: indexed as any. A record
    without ``ts_ms`` (from before records carried it) counts as the former;
    a later link it hid is indexed again by the forget (``on_forget``).
    """
    key = record["key"]
    ts_ms = record.get("ts_ms")
    if deleted_at_ms is not None and (ts_ms is None or int(ts_ms) <= deleted_at_ms):
        forget = {"op": "forget_user", "user_id": record["user_id"], "up_to_ms": deleted_at_ms}
        return index, [Send("identity.lookups", key, forget)]
    return (index if key in index else (*index, key)), []


def deleted_up_to(deleted_at_ms: int | None, request_ts_ms: int, now_ms: int) -> int:
    """The time a user's deletion covers: the later of the request's and the
    processing time (as attribute's ``privacy.deleted``). A deletion already
    covering the request's time (its redelivery, or a replay) keeps it: a
    second processing must not stretch it over the links of the user's return.
    """
    if deleted_at_ms is not None and deleted_at_ms >= request_ts_ms:
        return deleted_at_ms
    return max(request_ts_ms, now_ms)


def on_delete(
    index: UserIndex, user_id: str, request_id: str | None, now_ms: int
) -> tuple[UserIndex, list[Send]]:
    """A delete request: ask every identifier of the user to forget them; drop the index.

    The forgets reach all of the user's links and clicks, whatever their time
    (a link may be dated ahead of the deletion). The caller keeps the
    deletion's marker (``deleted_up_to``), which catches the links that reach
    the index after it.
    The receipt (privacy.receipts, keyed by request_id) says identity_match has
    processed the request and how many identifiers it reached; it carries no
    user id. A request without a request_id gets no receipt (nothing to key it by).
    """
    forget = {"op": "forget_user", "user_id": user_id}
    sends = [Send("identity.lookups", identifier, forget) for identifier in index]
    if request_id is not None:
        receipt = {
            "request_id": request_id,
            "service": "identity_match",
            "completed_at_ms": now_ms,
            "identifiers": len(index),
        }
        sends.append(Send("privacy.receipts", request_id, receipt))
    return (), sends
