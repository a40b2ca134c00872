"""Matching rules of the contract, as pure functions.

Two kinds of state, partitioned differently:

* per **identifier** (hash or click_id; co-partitioned with identity.signals):
  the key's signal history, the clicks that carry it, and the conversions
  that *watch* it (so a late signal can re-answer them);
* per **conversion_key** (the owner): the accepted conversion, one answer per
  identifier slot, the current match and its ``match_version``.

A conversion's identifiers become *slots* in priority order; each slot is
answered by the partition owning the identifier; the owner combines answers:
the first slot (in order) that resolves to a user wins.
"""

from __future__ import annotations

from typing import Any

from shared.contract.limits import IP_UA_VALIDITY_MS
from shared.contract.versions import next_stamp

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


# --------------------------------------------------------------- conversions


def restriction(conv: dict[str, Any]) -> str | None:
    """The unidentified reason a conversion has before any lookup, if any."""
    if conv.get("opt_out"):
        return "opt_out"
    if conv.get("ldp"):
        return "ldp"
    return None


def slots(conv: dict[str, Any]) -> list[list[str]]:
    """``[[key_type, signal_type, identifier], ...]`` in priority order."""
    ids = conv.get("ids") or {}
    out: list[list[str]] = []
    for key_type, field, signal_type in PRIORITY:
        value = ids.get(field)
        if not value:
            continue
        values = value if isinstance(value, list) else [value]
        out.extend([key_type, signal_type, v] for v in values)
    return out


def new_owner_state(conv: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """State of a freshly accepted conversion (possibly superseding an earlier one).

    ``gen`` tells answers for this acceptance from stale ones; ``mv`` (the match
    version) carries over so that versions keep growing under the same key.
    """
    previous = previous or {}
    return {
        "conv": conv,
        "gen": previous.get("gen", 0) + 1,
        "mv": previous.get("mv", 0),
        "slots": slots(conv),
        "answers": {},
        "result": None,
        "user": previous.get("user"),
    }


def combine(state: dict[str, Any]) -> dict[str, Any] | None:
    """The match result once every slot has an answer, else None (still waiting).

    Result: ``{"status": "matched", "key_type", "user_id"}`` or
    ``{"status": "unidentified", "reason"}``.
    """
    reason = restriction(state["conv"])
    if reason:
        return {"status": "unidentified", "reason": reason}
    if not state["slots"]:
        return {"status": "unidentified", "reason": "no_identifiers"}
    answers = state["answers"]
    if len(answers) < len(state["slots"]):
        return None
    for index, (key_type, _signal_type, _identifier) in enumerate(state["slots"]):
        user = answers.get(str(index))
        if user is not None:
            return {"status": "matched", "key_type": key_type, "user_id": user}
    return {"status": "unidentified", "reason": "no_match"}


def lookup_requests(state: dict[str, Any], conversion_key: str) -> list[tuple[str, dict[str, Any]]]:
    """(identifier, request) pairs asking each identifier's owner to watch it."""
    conv = state["conv"]
    return [
        (
            identifier,
            {
                "conversion_key": conversion_key,
                "slot": str(index),
                "gen": state["gen"],
                "signal_type": signal_type,
                "ad_account_id": conv["ad_account_id"],
                "event_time": conv["event_time"],
            },
        )
        for index, (_key_type, signal_type, identifier) in enumerate(state["slots"])
    ]


# --------------------------------------------------------------- identifiers


def new_key_state() -> dict[str, Any]:
    return {"signals": [], "clicks": [], "watchers": {}}


def add_signal(state: dict[str, Any], signal: dict[str, Any], offset: int) -> bool:
    """Record one identity signal; False if this input offset was seen already."""
    if any(s[1] == offset for s in state["signals"]):
        return False
    state["signals"].append(
        [
            int(signal["ts_ms"]),
            offset,
            signal["op"],
            signal["user_id"],
            signal["key_type"],
            signal.get("ad_account_id"),
        ]
    )
    state["signals"].sort(key=lambda s: (s[0], s[1]))
    return True


def add_click(state: dict[str, Any], click: dict[str, Any]) -> bool:
    """Record one click carrying this click_id; False if already known."""
    if any(c[2] == click["engagement_id"] for c in state["clicks"]):
        return False
    state["clicks"].append([int(click["ts_ms"]), click["user_id"], click["engagement_id"]])
    return True


def fold(
    signals: list[list[Any]], signal_type: str, ad_account_id: str | None, until_ms: int
) -> tuple[str | None, int | None]:
    """Where a key points as of ``until_ms``: (user_id, ts of the link that set it).

    Signals are folded in (ts_ms, arrival) order; ``link`` points the key at its
    user, ``unlink`` clears it only if it points at that user. ``external_id``
    signals count only for their own ad account.
    """
    user: str | None = None
    since: int | None = None
    for ts_ms, _offset, op, signal_user, key_type, account in signals:
        if ts_ms > until_ms:
            break
        if key_type != signal_type:
            continue
        if signal_type == "external_id" and account != ad_account_id:
            continue
        if op == "link":
            user, since = signal_user, ts_ms
        elif op == "unlink" and user == signal_user:
            user, since = None, None
    return user, since


def answer(state: dict[str, Any], watch: dict[str, Any]) -> str | None:
    """The user this identifier gives the watching conversion, or None."""
    until_ms = int(watch["event_time"]) * 1000
    signal_type = watch["signal_type"]
    if signal_type == "click":
        best: list[Any] | None = None
        for click in state["clicks"]:
            if click[0] <= until_ms and (best is None or (click[0], click[2]) > (best[0], best[2])):
                best = click
        return best[1] if best else None
    user, since = fold(state["signals"], signal_type, watch.get("ad_account_id"), until_ms)
    if user is not None and signal_type == "ip_ua" and until_ms - since > IP_UA_VALIDITY_MS:
        return None
    return user


def prune_watchers(state: dict[str, Any], now_ms: int) -> None:
    """Forget conversions whose late-data horizon has passed."""
    watchers = state["watchers"]
    for name in [n for n, w in watchers.items() if w["expires_ms"] < now_ms]:
        del watchers[name]


def touched_watchers(state: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
    """Watchers a new signal or click at ``ts_ms`` may re-answer (event_time >= ts)."""
    return [w for w in state["watchers"].values() if int(w["event_time"]) * 1000 >= ts_ms]


# --------------------------------------------------------------- transitions


def on_result(
    state: dict[str, Any], result: dict[str, Any], conversion_key: str, at_ms: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """What to send when a conversion's match result is (re)computed.

    Returns ``(topic, key, message)`` triples: a retract to the user that held
    the conversion before, an assign to the matched user, or an unidentified
    result for the publisher. Nothing when the result did not change.

    The match version ``mv`` is a stamp (``shared.contract.versions``): a decision made
    after a crash outranks every decision made before it, even when the
    recomputation took fewer steps than the first run.
    """
    if result == state["result"] and not state.get("dirty"):
        return []
    state["mv"] = next_stamp(state["mv"], at_ms)
    state["result"] = result
    state["dirty"] = False
    previous_user = state.get("user")
    sends: list[tuple[str, str, dict[str, Any]]] = []
    new_user = result.get("user_id") if result["status"] == "matched" else None
    if previous_user is not None and previous_user != new_user:
        sends.append(
            (
                "attribution.assignments",
                previous_user,
                {"op": "retract", "conversion_key": conversion_key, "mv": state["mv"]},
            )
        )
    state["user"] = new_user
    if new_user is not None:
        sends.append(
            (
                "attribution.assignments",
                new_user,
                {
                    "op": "assign",
                    "conversion_key": conversion_key,
                    "mv": state["mv"],
                    "key_type": result["key_type"],
                    # The user's partition needs no identifiers, only the facts.
                    "conv": {k: v for k, v in state["conv"].items() if k != "ids"},
                },
            )
        )
    else:
        sends.append(
            (
                "attribution.results",
                conversion_key,
                {
                    "conv": state["conv"],
                    "status": "unidentified",
                    "reason": result["reason"],
                    # Ordered by (mv, seq) against attribute's results (seq 0).
                    "order": [state["mv"], 0],
                },
            )
        )
    return sends


# --------------------------------------------------------------- deletion


def forget_user(state: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    """Remove a deleted user's signals, clicks and answers from one identifier.

    Conversions that resolved to the user through this identifier are not
    re-matched (the contract re-emits them with ``match.user = null``); their
    owners are told to forget the user (the returned messages).
    """
    state["signals"] = [s for s in state["signals"] if s[3] != user_id]
    state["clicks"] = [c for c in state["clicks"] if c[1] != user_id]
    scrubs = []
    for watcher in state["watchers"].values():
        if watcher.get("last") == user_id:
            watcher["last"] = None
            scrubs.append(
                {
                    "op": "forget_user",
                    "conversion_key": watcher["conversion_key"],
                    "user_id": user_id,
                }
            )
    return scrubs


def holds_links(state: dict[str, Any]) -> bool:
    """Whether any user's signal or click remains on this identifier.

    One without links is deleted whole after a deletion, watchers included:
    the identifier itself belonged to the deleted user.
    """
    return bool(state["signals"] or state["clicks"])


def forget_user_in_owner(state: dict[str, Any], user_id: str) -> None:
    """Scrub a deleted user's id and identifiers from a conversion owner's state.

    The conversion is not re-matched; the slots keep their key types (so later
    answers still combine in priority order) but lose the identifier values.
    """
    state["conv"] = {**state["conv"], "ids": {}}
    state["slots"] = [[key_type, signal_type, ""] for key_type, signal_type, _ in state["slots"]]
    for slot, user in list(state["answers"].items()):
        if user == user_id:
            state["answers"][slot] = None
    if state.get("user") == user_id:
        state["user"] = None
    result = state.get("result") or {}
    if result.get("user_id") == user_id:
        state["result"] = {**result, "user_id": None}


def users_of(state: dict[str, Any]) -> set[str]:
    """The users this identifier has ever been linked or clicked by (for the user index)."""
    return {s[3] for s in state["signals"]} | {c[1] for c in state["clicks"]}


def watch(state: dict[str, Any], request: dict[str, Any], expires_ms: int) -> dict[str, Any]:
    """Register (or renew) a conversion's watch on this identifier."""
    name = f"{request['conversion_key']}|{request['slot']}"
    watcher = {**request, "last": None, "expires_ms": expires_ms}
    state["watchers"][name] = watcher
    return watcher


def answers(
    state: dict[str, Any], watchers: list[dict[str, Any]], *, always: bool
) -> list[dict[str, Any]]:
    """Answer messages for watchers: every one (``always``) or those that changed."""
    out = []
    for watcher in watchers:
        user = answer(state, watcher)
        if not always and user == watcher["last"]:
            continue
        watcher["last"] = user
        out.append(
            {
                "conversion_key": watcher["conversion_key"],
                "slot": watcher["slot"],
                "gen": watcher["gen"],
                "user_id": user,
            }
        )
    return out
