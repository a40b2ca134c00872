"""Attribution rules of the contract, as pure functions over one user's state.

State per user (the ``users`` table, keyed by user_id like ads.engagements):

* ``eng``: engagement_id -> [ts_ms, type, ad_account_id, campaign_id, ad_group_id, ad_id]
* ``convs``: conversion_key -> the conversion assigned to this user, its
  match version ``mv``, attribution stamp ``seq``, the match key type and
  the signature of the last result sent (kept for the late-data horizon)
* ``privacy``: [ts_ms, arrival, kind] of the latest privacy request
* ``named``: every conversion key ever assigned to the user (kept past the
  late-data horizon: a deletion must reach every result that named the user)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from shared.contract.limits import (
    ALLOWED_WINDOW_DAYS,
    DAY_MS,
    DEFAULT_WINDOWS_DAYS,
    ENGAGEMENT_RETENTION_MS,
)
from shared.contract.versions import next_stamp

CLASS_RANK: Mapping[str, int] = {"click": 3, "engagement": 2, "view": 1}


#: The attribution windows (ms per class) of an ad account.
WindowsOf = Callable[[str], Mapping[str, int]]


def default_windows(_ad_account_id: str) -> Mapping[str, int]:
    return DEFAULT_WINDOWS_MS


def new_user_state() -> dict[str, Any]:
    return {"eng": {}, "convs": {}, "privacy": None, "named": []}


def windows_ms(days: Mapping[str, int] | None = None) -> dict[str, int]:
    """Windows in ms from days per class (missing classes take the defaults)."""
    days = dict(DEFAULT_WINDOWS_DAYS, **(days or {}))
    for kind, value in days.items():
        if value not in ALLOWED_WINDOW_DAYS:
            raise ValueError(f"window for {kind} must be one of {sorted(ALLOWED_WINDOW_DAYS)}")
    return {kind: value * DAY_MS for kind, value in days.items()}


DEFAULT_WINDOWS_MS: Mapping[str, int] = windows_ms()


def is_candidate(
    eng: list[Any], ad_account_id: str, event_time: int, windows: Mapping[str, int]
) -> bool:
    ts_ms, kind, account = eng[0], eng[1], eng[2]
    window = windows.get(kind, 0)
    at_ms = event_time * 1000
    return account == ad_account_id and window > 0 and ts_ms <= at_ms and at_ms - ts_ms <= window


def best_touch(
    engagements: Mapping[str, list[Any]],
    ad_account_id: str,
    event_time: int,
    windows: Mapping[str, int],
) -> dict[str, Any] | None:
    """Last touch: class priority click > engagement > view, then latest ts, then greatest id."""
    best: tuple[int, int, str] | None = None
    best_eng: list[Any] | None = None
    for engagement_id, eng in engagements.items():
        if not is_candidate(eng, ad_account_id, event_time, windows):
            continue
        rank = (CLASS_RANK[eng[1]], eng[0], engagement_id)
        if best is None or rank > best:
            best, best_eng = rank, eng
    if best is None or best_eng is None:
        return None
    return {
        "engagement_id": best[2],
        "campaign_id": best_eng[3],
        "ad_group_id": best_eng[4],
        "ad_id": best_eng[5],
        "type": best_eng[1],
        "ts_ms": best_eng[0],
    }


def user_opted_out(state: Mapping[str, Any]) -> bool:
    privacy = state.get("privacy")
    return bool(privacy) and privacy[2] == "opt_out"


def evaluate(
    state: Mapping[str, Any], entry: Mapping[str, Any], windows_of: WindowsOf
) -> dict[str, Any]:
    """The result of one assigned conversion under the user's current state."""
    conv = entry["conv"]
    if user_opted_out(state):
        return {"status": "unidentified", "reason": "user_opt_out", "touch": None}
    windows = windows_of(conv["ad_account_id"])
    touch = best_touch(state["eng"], conv["ad_account_id"], conv["event_time"], windows)
    return {"status": "attributed" if touch else "unattributed", "reason": None, "touch": touch}


def _signature(result: Mapping[str, Any]) -> list[Any]:
    touch = result["touch"]
    return [result["status"], result["reason"], touch["engagement_id"] if touch else None]


def refresh(
    state: dict[str, Any],
    conversion_key: str,
    windows_of: WindowsOf,
    at_ms: int,
    force: bool = False,
) -> dict[str, Any] | None:
    """Re-evaluate one conversion; return its new result if it changed.

    The result's ``order`` is ``[mv, seq]``: the match decision first, then
    the re-attribution stamp (``shared.contract.versions``), which outranks every
    earlier one even when a crash made this user's state recompute.
    """
    entry = state["convs"][conversion_key]
    result = evaluate(state, entry, windows_of)
    signature = _signature(result)
    if not force and signature == entry.get("sig"):
        return None
    # The first result of an assignment is stamped too: recomputed after a
    # crash with the engagements read in another order, it can differ.
    entry["seq"] = next_stamp(entry["seq"], at_ms)
    entry["sig"] = signature
    result["order"] = [entry["mv"], entry["seq"]]
    result["key_type"] = entry["key_type"]
    result["conv"] = entry["conv"]
    return result


def assign(
    state: dict[str, Any],
    msg: Mapping[str, Any],
    windows_of: WindowsOf,
    expires_ms: int,
    at_ms: int,
) -> dict[str, Any] | None:
    """A conversion joins this user; None if the assignment is stale or repeated."""
    key = msg["conversion_key"]
    current = state["convs"].get(key)
    if current is not None and current["mv"] >= msg["mv"]:
        return None
    named = state.setdefault("named", [])
    if key not in named:
        named.append(key)
    state["convs"][key] = {
        "conv": msg["conv"],
        "mv": msg["mv"],
        "seq": 0,
        "key_type": msg["key_type"],
        "sig": None,
        "expires_ms": expires_ms,
    }
    return refresh(state, key, windows_of, at_ms, force=True)


def retract(state: dict[str, Any], msg: Mapping[str, Any]) -> None:
    """A conversion leaves this user (it now belongs to another, or to nobody)."""
    current = state["convs"].get(msg["conversion_key"])
    if current is not None and current["mv"] < msg["mv"]:
        del state["convs"][msg["conversion_key"]]


def add_engagement(
    state: dict[str, Any], eng: Mapping[str, Any], windows_of: WindowsOf, at_ms: int
) -> list[tuple[str, dict[str, Any]]]:
    """Record an engagement; re-attribute the user's conversions it may change."""
    engagement_id = str(eng["engagement_id"])
    if engagement_id in state["eng"]:
        return []
    row = [
        int(eng["ts_ms"]),
        eng["type"],
        eng["ad_account_id"],
        eng.get("campaign_id"),
        eng.get("ad_group_id"),
        eng.get("ad_id"),
    ]
    state["eng"][engagement_id] = row
    windows = windows_of(row[2])
    changed = []
    for key, entry in state["convs"].items():
        conv = entry["conv"]
        if is_candidate(row, conv["ad_account_id"], conv["event_time"], windows):
            result = refresh(state, key, windows_of, at_ms)
            if result is not None:
                changed.append((key, result))
    return changed


def add_privacy_request(
    state: dict[str, Any],
    request: Mapping[str, Any],
    arrival: int,
    windows_of: WindowsOf,
    at_ms: int,
) -> list[tuple[str, dict[str, Any]]]:
    """Keep the latest request by ts_ms (ties: arrival) and re-evaluate on change."""
    if request.get("kind") not in ("opt_out", "opt_in"):
        return []
    new = [int(request["ts_ms"]), arrival, request["kind"]]
    current = state.get("privacy")
    if current is not None and (current[0], current[1]) >= (new[0], new[1]):
        return []
    state["privacy"] = new
    changed = []
    for key in list(state["convs"]):
        result = refresh(state, key, windows_of, at_ms)
        if result is not None:
            changed.append((key, result))
    return changed


def trim(state: dict[str, Any], now_ms: int) -> None:
    """Drop engagements past every window and conversions past the late horizon."""
    oldest = now_ms - ENGAGEMENT_RETENTION_MS
    state["eng"] = {k: v for k, v in state["eng"].items() if v[0] >= oldest}
    state["convs"] = {k: v for k, v in state["convs"].items() if v["expires_ms"] >= now_ms}


def delete_user(state: dict[str, Any]) -> list[str]:
    """The conversion keys a deleted user was ever assigned (to scrub downstream).

    The caller drops the whole user state (a tombstone in the changelog).
    """
    return sorted(set(state.get("named", [])) | set(state["convs"]))


def scrubbed(last: Mapping[str, Any] | None, user: str, at_ms: int) -> dict[str, Any] | None:
    """The published record re-emitted without a deleted user's pseudonym, if it named them."""
    if last is None or not last.get("match") or last["match"].get("user") != user:
        return None
    version = next_stamp(last["version"], at_ms)
    return {**last, "match": {**last["match"], "user": None}, "version": version}


def is_newer(order: list[int], published: Mapping[str, Any] | None) -> bool:
    """Whether a result of this ``[mv, seq]`` order replaces the published one."""
    return published is None or tuple(order) > tuple(published["order"])


def parse_account_settings(raw: bytes) -> Mapping[str, int]:
    """An accounts.settings value -> the account's windows in ms (ValueError if invalid)."""
    doc = orjson.loads(raw)
    days = doc.get("windows") if isinstance(doc, dict) else None
    if not isinstance(days, dict) or not set(days) <= set(DEFAULT_WINDOWS_DAYS):
        raise ValueError("windows must map click / engagement / view to days")
    return windows_ms(days)
