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


def test_a_users_value_of_the_old_layout_is_read_whole_and_written_as_privacy_only() -> None:
    user = state.decode_user(USER_JSON)
    assert set(user.engagements) == {"e-1"} and set(user.convs) == {"1:lead:e:online"}
    assert user.named == ("1:lead:e:online", "1:lead:old:online")
    assert state.encode_user(user) == {"privacy": USER_JSON["privacy"]}


def test_an_old_layout_split_puts_every_part_in_its_table() -> None:
    """Parts kept inline are new to their tables: all of them are written once."""
    user = state.decode_user(USER_JSON)
    writes = state.part_writes(state.UserParts(), user, state.Concerned())
    assert writes["engagements"].puts == {"e-1": USER_JSON["eng"]["e-1"]}
    assert writes["convs"].puts == USER_JSON["convs"]
    assert writes["named"].puts == {k: True for k in USER_JSON["named"]}
    assert all(not w.deletes for w in writes.values())


def test_a_part_of_the_tables_wins_over_one_of_the_old_layout() -> None:
    newer = state.decode_engagement([1_700_000_000_001, "view", "1", None, None, None])
    user = state.decode_user(USER_JSON, state.UserParts(engagements={"e-1": newer}))
    assert user.engagements["e-1"].type == "view"


def test_unchanged_parts_are_not_written_unless_the_input_concerns_them() -> None:
    user = state.decode_user(USER_JSON)
    stored = state.UserParts(user.engagements, user.convs, frozenset(user.named))
    assert all(not w.puts for w in state.part_writes(stored, user, state.Concerned()).values())
    again = state.Concerned(convs=frozenset({"1:lead:e:online"}))
    assert list(state.part_writes(stored, user, again)["convs"].puts) == ["1:lead:e:online"]


def test_parts_read_and_gone_are_deleted_and_a_deleted_user_deletes_them_all() -> None:
    user = state.decode_user(USER_JSON)
    stored = state.UserParts(user.engagements, user.convs, frozenset(user.named))
    trimmed = state.User(convs=user.convs, privacy=user.privacy, named=user.named)
    assert state.part_writes(stored, trimmed, state.Concerned())["engagements"].deletes == ("e-1",)
    gone = state.part_writes(stored, None, state.Concerned())
    assert sorted(gone["named"].deletes) == sorted(USER_JSON["named"])
    assert gone["convs"].deletes == ("1:lead:e:online",)


def test_a_part_key_starts_with_its_kinds_prefix_and_is_routed_by_the_user() -> None:
    key = state.part_key("u.abc", "convs", "1:lead:e|x:online")
    assert key == "u.abc|c|1:lead:e|x:online"
    assert key.startswith(state.part_prefix("u.abc", "convs"))
    assert not key.startswith(state.part_prefix("u.abc", "named"))
    assert state.user_of_key(key) == "u.abc" == state.user_of_key("u.abc")


def test_users_value_from_before_named_was_kept_decodes() -> None:
    old = {k: v for k, v in USER_JSON.items() if k != "named"}
    assert state.decode_user(old).named == ()


def test_a_user_without_a_privacy_choice_has_no_users_value() -> None:
    assert state.decode_user(None) == state.User()
    assert state.encode_user(state.User()) is None
    assert state.encode_user(state.decode_user({**USER_JSON, "privacy": None})) is None


def test_published_value_round_trips_to_the_same_json() -> None:
    value = {"order": [3, 1_700_000_060_000], "record": {"version": 9, "match": None}}
    decoded = state.decode_published(value)
    assert decoded is not None and decoded.order == (3, 1_700_000_060_000)
    assert state.encode_published(decoded) == value
    assert state.decode_published(None) is None
