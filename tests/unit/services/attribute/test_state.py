"""Typed table values of attribute keep the JSON layout of the changelogs."""

from __future__ import annotations

from typing import Any

from services.attribute import state

#: A ``users`` value as the untyped agent wrote it before the state was typed.
USER_JSON: dict[str, Any] = {
    "eng": {"e-1": [1_700_000_000_000, "click", "1", "c-1", "g-1", "a-1"]},
    "convs": {
        "1:lead:e:online": {
            "conv": {"ad_account_id": "1", "event_time": 1_700_000_000},
            "mv": 3,
            "seq": 1_700_000_060_000,
            "key_type": "em",
            "sig": ["attributed", None, "e-1"],
            "expires_ms": 1_700_600_000_000,
        }
    },
    "privacy": [1_699_000_000_000, 4, "opt_in"],
    "named": ["1:lead:e:online", "1:lead:old:online"],
}


def test_users_value_round_trips_to_the_same_json() -> None:
    assert state.encode_user(state.decode_user(USER_JSON)) == USER_JSON


def test_users_value_from_before_named_was_kept_decodes() -> None:
    old = {k: v for k, v in USER_JSON.items() if k != "named"}
    assert state.decode_user(old).named == ()


def test_an_empty_user_is_a_tombstone() -> None:
    assert state.decode_user(None) == state.User()
    assert state.encode_user(state.User()) is None


def test_published_value_round_trips_to_the_same_json() -> None:
    value = {"order": [3, 1_700_000_060_000], "record": {"version": 9, "match": None}}
    decoded = state.decode_published(value)
    assert decoded is not None and decoded.order == (3, 1_700_000_060_000)
    assert state.encode_published(decoded) == value
    assert state.decode_published(None) is None
