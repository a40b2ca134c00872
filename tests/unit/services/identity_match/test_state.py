"""Typed table values (services/identity_match/state.py) keep the changelog's JSON layout."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.identity_match import state

#: A ``keys`` value as the untyped agents wrote it (positional lists, watcher dicts).
KEYS_V1 = {
    "signals": [[1_000, 7, "link", "u1", "em", None], [2_000, 9, "unlink", "u1", "em", None]],
    "clicks": [[1_500, "u2", "eng-1"]],
    "watchers": {
        "acct:checkout:ev:online|0": {
            "conversion_key": "acct:checkout:ev:online",
            "slot": "0",
            "gen": 2,
            "signal_type": "em",
            "ad_account_id": "acct",
            "event_time": 1_700_000_000,
            "last": "u1",
            "expires_ms": 1_800_000_000_000,
        }
    },
}

OWNER_V1 = {
    "conv": {"raw_ref": "r:0:1", "ad_account_id": "acct", "event_time": 1, "ids": {"em": ["e"]}},
    "gen": 1,
    "mv": 1_800_000_000_000,
    "slots": [["em", "em", "e"]],
    "answers": {"0": "u1"},
    "result": {"status": "matched", "key_type": "em", "user_id": "u1"},
    "user": "u1",
    "dirty": False,
}


KEYS_V2 = {"signals": KEYS_V1["signals"], "clicks": KEYS_V1["clicks"]}


def test_keys_value_round_trips_byte_for_byte() -> None:
    raw = orjson.dumps(KEYS_V2)
    assert orjson.dumps(state.encode_keys(state.decode_keys(orjson.loads(raw)))) == raw


def test_a_keys_value_of_the_old_layout_brings_its_watchers_and_is_written_without_them() -> None:
    keys = state.decode_keys(KEYS_V1)
    assert keys.watchers["acct:checkout:ev:online|0"].last == "u1"
    assert state.encode_keys(keys) == KEYS_V2


def test_a_watcher_of_the_table_wins_over_one_of_the_old_layout() -> None:
    """The table's watcher was written after the old value (the value is rewritten without it)."""
    newer = state.decode_watcher({**KEYS_V1["watchers"]["acct:checkout:ev:online|0"], "gen": 3})
    keys = state.decode_keys(KEYS_V1, {newer.name: newer})
    assert keys.watchers[newer.name].gen == 3


def test_a_watcher_round_trips_byte_for_byte() -> None:
    value = KEYS_V1["watchers"]["acct:checkout:ev:online|0"]
    assert orjson.dumps(state.encode_watcher(state.decode_watcher(value))) == orjson.dumps(value)


def test_an_identifier_without_signals_or_clicks_has_no_keys_value() -> None:
    watcher = state.decode_watcher(KEYS_V1["watchers"]["acct:checkout:ev:online|0"])
    assert state.encode_keys(state.KeyState(watchers={watcher.name: watcher})) is None


def test_watcher_keys_start_with_their_identifiers_prefix() -> None:
    key = state.watcher_key("e" * 64, "acct:checkout:ev:online|0")
    assert key == "e" * 64 + "|acct:checkout:ev:online|0"
    assert key.startswith(state.watcher_prefix("e" * 64))
    assert not state.watcher_key("e" * 63, "x|0").startswith(state.watcher_prefix("e" * 64))


def test_keys_value_is_read_by_name() -> None:
    keys = state.decode_keys(KEYS_V1)
    assert keys.signals[1].op == "unlink" and keys.signals[1].arrival == 9
    assert keys.clicks[0].engagement_id == "eng-1"


def test_owner_value_round_trips_byte_for_byte() -> None:
    raw = orjson.dumps(OWNER_V1)
    assert orjson.dumps(state.encode_owner(state.decode_owner(orjson.loads(raw)))) == raw


def test_absent_values_decode_as_new_state_and_deleted_ones_encode_as_tombstones() -> None:
    assert state.decode_keys(None) == state.KeyState()
    assert state.decode_owner(None) is None and state.encode_owner(None) is None
    assert state.encode_keys(None) is None
    assert state.decode_user_index(None) == () and state.encode_user_index(()) is None


@given(st.lists(st.text(min_size=1), unique=True, min_size=1))
def test_user_index_round_trips(identifiers: list[str]) -> None:
    assert state.encode_user_index(state.decode_user_index(identifiers)) == identifiers


@given(st.text(alphabet="0123456789abcdef.cu", min_size=1), st.text(), st.text())
def test_a_watcher_key_is_routed_by_its_identifier(
    identifier: str, conversion_key: str, slot: str
) -> None:
    key = state.watcher_key(identifier, state.watcher_name(conversion_key, slot))
    assert state.identifier_of_watcher_key(key) == identifier
