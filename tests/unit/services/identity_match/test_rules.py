"""Matching rules (services/identity_match/rules.py): pure steps over typed state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.identity_match import rules
from services.identity_match import state as state_module
from services.identity_match.state import Click, KeyState, OwnerState, Watcher
from shared.contract.keys import internal_click, internal_user, keyed_ip_ua

NOW_MS = 1_800_000_000_000  # the wall clock of the worker (version stamps)
HORIZON_MS = 7 * 86_400_000

DAY_MS = 86_400_000
T = 1_700_000_000  # a conversion's event_time (seconds)
T_MS = T * 1000
H = "a" * 64
IP_UA_KEY = "test-ip-ua-key"


def conv(**ids: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "click_id": None,
        "external_id": [],
        "em": [],
        "ph": [],
        "hashed_maids": [],
        "ip_ua": None,
    }
    base.update(ids)
    return {
        "ad_account_id": "1",
        "event_time": T,
        "ids": base,
        "opt_out": False,
        "ldp": False,
        "raw_ref": "r:0:1",
        "event_name": "checkout",
        "event_id": "e",
    }


def signal(
    ts_ms: int, op: str = "link", user: str = "u1", key_type: str = "em", account: str | None = None
) -> dict[str, Any]:
    return {
        "user_id": user,
        "key_type": key_type,
        "key": H,
        "op": op,
        "ts_ms": ts_ms,
        "ad_account_id": account,
    }


def forwarded(s: dict[str, Any], offset: int) -> dict[str, Any]:
    """The forwarded signal, its user id read back as the test's name.

    Folding does not care what form a user id has; the forwarding's keying of
    it is tested on its own (``test_a_signal_goes_on_with_the_internal_user_id_only``).
    """
    value: dict[str, Any] = rules.forward_signal(s, 0, offset, IP_UA_KEY).value
    return {**value, "user_id": s["user_id"]}


def key_state(*signals: dict[str, Any]) -> KeyState:
    state = KeyState()
    for offset, s in enumerate(signals):
        state, _ = rules.on_signal(state, H, forwarded(s, offset), NOW_MS)
    return state


def watch(signal_type: str = "em", account: str | None = "1", event_time: int = T) -> Watcher:
    return Watcher("k", "0", 1, signal_type, account, event_time, None, NOW_MS + HORIZON_MS)


def lookup(slot: str = "0", signal_type: str = "em", event_time: int = T) -> dict[str, Any]:
    return {
        "conversion_key": "k",
        "slot": slot,
        "gen": 1,
        "signal_type": signal_type,
        "ad_account_id": "1",
        "event_time": event_time,
    }


def click(ts_ms: int, user: str = "u1", engagement_id: str = "e1") -> dict[str, Any]:
    return {"click_id": "c", "ts_ms": ts_ms, "user_id": user, "engagement_id": engagement_id}


# ------------------------------------------------------------------ re-keying


def test_an_ip_ua_signal_is_forwarded_under_its_keyed_form_only() -> None:
    send = rules.forward_signal(signal(1, key_type="ip_ua"), 3, 41, IP_UA_KEY)
    keyed = keyed_ip_ua(H, IP_UA_KEY)
    assert send.topic == "identity.key_signals" and send.key == keyed
    assert send.value["key"] == keyed and H not in str(send.value)


def test_other_signals_are_forwarded_under_their_own_key() -> None:
    send = rules.forward_signal(signal(1, key_type="em"), 3, 41, IP_UA_KEY)
    user = internal_user("u1", IP_UA_KEY)
    assert send.key == H and send.value == {**signal(1), "user_id": user, "arrival": [3, 41]}


def test_a_signal_goes_on_with_the_internal_user_id_only() -> None:
    send = rules.forward_signal(signal(1, user="user-raw-1"), 3, 41, IP_UA_KEY)
    assert send.value["user_id"] == internal_user("user-raw-1", IP_UA_KEY)
    assert "user-raw-1" not in str(send.value)


def test_only_clicks_with_a_click_id_are_forwarded_by_internal_click_id() -> None:
    eng = {**click(1), "type": "click", "ad_account_id": "1"}
    [send] = rules.forward_click(eng, IP_UA_KEY)
    internal = internal_click("c", IP_UA_KEY)
    expected = {**click(1), "click_id": internal, "user_id": internal_user("u1", IP_UA_KEY)}
    assert (send.topic, send.key, send.value) == ("identity.clicks", internal, expected)
    assert rules.forward_click({**eng, "type": "view"}, IP_UA_KEY) == []
    assert rules.forward_click({**eng, "click_id": None}, IP_UA_KEY) == []


def test_a_delete_request_goes_on_by_internal_user_id_others_not_at_all() -> None:
    request = {"request_id": "r1", "user_id": "user-raw-1", "kind": "delete", "ts_ms": 5}
    [send] = rules.forward_deletion(request, IP_UA_KEY)
    internal = internal_user("user-raw-1", IP_UA_KEY)
    assert (send.topic, send.key) == ("identity.deletions", internal)
    assert send.value == {"user_id": internal, "request_id": "r1", "ts_ms": 5}
    assert rules.forward_deletion({**request, "kind": "opt_out"}, IP_UA_KEY) == []


# --------------------------------------------------------------- conversions


def test_slots_follow_priority_then_array_order() -> None:
    c = conv(
        em=["e1", "e2"],
        click_id="epik",
        ph=["p1"],
        ip_ua="ipua",
        external_id=["x1"],
        hashed_maids=["m1"],
    )
    assert [s.key_type for s in rules.slots(c)] == [
        "click_id",
        "external_id",
        "em",
        "em",
        "ph",
        "hashed_maid",
        "ip_ua",
    ]
    assert [s.identifier for s in rules.slots(c)][2:4] == ["e1", "e2"]


def test_hashed_maids_look_up_hashed_maid_signals() -> None:
    assert rules.slots(conv(hashed_maids=["m"]))[0].signal_type == "hashed_maid"


# --------------------------------------------------------------- identifiers


def test_link_points_key_at_user_as_of_event_time() -> None:
    assert rules.answer(key_state(signal(T_MS - 1)), watch()) == "u1"


def test_link_made_after_the_conversion_does_not_claim_it() -> None:
    assert rules.answer(key_state(signal(T_MS + 1)), watch()) is None


def test_link_at_exactly_event_time_counts() -> None:
    assert rules.answer(key_state(signal(T_MS)), watch()) == "u1"


def test_unlink_clears_only_its_own_user() -> None:
    state = key_state(signal(1, user="u1"), signal(2, op="unlink", user="u2"))
    assert rules.answer(state, watch()) == "u1"
    state = key_state(signal(1, user="u1"), signal(2, op="unlink", user="u1"))
    assert rules.answer(state, watch()) is None


def test_relink_to_another_user_moves_the_key() -> None:
    state = key_state(signal(1, user="u1"), signal(2, user="u2"))
    assert rules.answer(state, watch()) == "u2"


def test_equal_timestamps_fold_in_arrival_order() -> None:
    state = key_state(signal(5, user="u1"), signal(5, user="u2"))
    assert rules.answer(state, watch()) == "u2"
    state = key_state(signal(5, user="u1"), signal(5, op="unlink", user="u1"))
    assert rules.answer(state, watch()) is None


def test_equal_timestamps_fold_in_input_order_whatever_order_they_were_forwarded() -> None:
    """The tie-break is the identity.signals offset carried in the forwarded value."""
    first, second = forwarded(signal(5, user="u1"), 10), forwarded(signal(5, user="u2"), 11)
    state, _ = rules.on_signal(KeyState(), H, second, NOW_MS)
    state, _ = rules.on_signal(state, H, first, NOW_MS)
    assert rules.answer(state, watch()) == "u2"


def test_late_arriving_earlier_signal_is_folded_in_time_order() -> None:
    state = key_state(signal(10, user="u2"), signal(5, user="u1"))  # u1 arrives late
    assert rules.answer(state, watch()) == "u2"


def test_signals_of_another_key_type_are_ignored() -> None:
    assert rules.answer(key_state(signal(1, key_type="ph")), watch("em")) is None


def test_external_id_matches_only_its_own_ad_account() -> None:
    state = key_state(signal(1, key_type="external_id", account="2"))
    assert rules.answer(state, watch("external_id", account="1")) is None
    assert rules.answer(state, watch("external_id", account="2")) == "u1"


def test_ip_ua_is_valid_for_seven_days_inclusive() -> None:
    state = key_state(signal(T_MS - 7 * DAY_MS, key_type="ip_ua"))
    assert rules.answer(state, watch("ip_ua")) == "u1"
    state = key_state(signal(T_MS - 7 * DAY_MS - 1, key_type="ip_ua"))
    assert rules.answer(state, watch("ip_ua")) is None


def test_click_id_resolves_to_the_user_of_a_click_at_or_before_event_time() -> None:
    state, _ = rules.on_click(KeyState(), "c", click(T_MS + 1, "late", "e2"), NOW_MS)
    assert rules.answer(state, watch("click")) is None
    state, _ = rules.on_click(state, "c", click(T_MS, "u1", "e1"), NOW_MS)
    assert rules.answer(state, watch("click")) == "u1"


def test_a_signal_forwarded_twice_is_folded_once() -> None:
    """After a crash the forwarder may write one identity.signals record twice."""
    state = key_state(signal(1))
    again, sends = rules.on_signal(state, H, forwarded(signal(1), 0), NOW_MS)
    assert again is state and sends == []


def test_a_known_click_changes_nothing() -> None:
    state, _ = rules.on_click(KeyState(), "c", click(1), NOW_MS)
    again, sends = rules.on_click(state, "c", click(1), NOW_MS)
    assert again is state and sends == []


def test_a_lookup_watches_the_identifier_and_is_answered_at_once() -> None:
    state, sends = rules.on_lookup(key_state(signal(1)), lookup(), NOW_MS, HORIZON_MS)
    assert [(s.topic, s.key, s.value) for s in sends] == [
        ("identity.answers", "k", {"conversion_key": "k", "slot": "0", "gen": 1, "user_id": "u1"})
    ]
    [watcher] = state.watchers.values()
    assert watcher.last == "u1" and watcher.expires_ms == NOW_MS + HORIZON_MS


def test_a_lookup_without_any_link_is_answered_with_no_user() -> None:
    _, [send] = rules.on_lookup(KeyState(), lookup(), NOW_MS, HORIZON_MS)
    assert send.value["user_id"] is None


def test_a_late_link_re_answers_the_watchers_it_changes_and_indexes_the_user() -> None:
    state, _ = rules.on_lookup(KeyState(), lookup(), NOW_MS, HORIZON_MS)
    state, sends = rules.on_signal(state, H, forwarded(signal(1), 0), NOW_MS)
    assert [(s.topic, s.key) for s in sends] == [
        ("identity.user_keys", "u1"),
        ("identity.answers", "k"),
    ]
    assert sends[0].value == {"user_id": "u1", "key": H, "ts_ms": 1}
    assert sends[1].value["user_id"] == "u1"


def test_a_link_after_the_conversion_re_answers_nothing() -> None:
    state, _ = rules.on_lookup(KeyState(), lookup(), NOW_MS, HORIZON_MS)
    _, sends = rules.on_signal(state, H, forwarded(signal(T_MS + 1), 0), NOW_MS)
    assert [s.topic for s in sends] == ["identity.user_keys"]


def test_watchers_past_their_horizon_are_forgotten() -> None:
    state, _ = rules.on_lookup(KeyState(), lookup(), NOW_MS, HORIZON_MS)
    later = NOW_MS + HORIZON_MS + 1
    state, _ = rules.on_signal(state, H, forwarded(signal(1), 0), later)
    assert state.watchers == {}
    _, sends = rules.on_signal(state, H, forwarded(signal(2, user="u2"), 1), later)
    assert [s.topic for s in sends] == ["identity.user_keys"]


def test_an_expired_watcher_is_not_re_answered_even_before_it_is_pruned() -> None:
    state, _ = rules.on_lookup(KeyState(), lookup(), NOW_MS, HORIZON_MS)
    _, sends = rules.on_signal(state, H, forwarded(signal(1), 0), NOW_MS + HORIZON_MS + 1)
    assert [s.topic for s in sends] == ["identity.user_keys"]


# ------------------------------------------------------------ watchers table


def test_a_lookup_reads_only_its_own_watcher_but_one_in_32_reads_them_all() -> None:
    keys = [f"acct:c:ev-{i}:web" for i in range(3_200)]
    sweeping = [k for k in keys if rules.reads_every_watcher("lookup", {"conversion_key": k})]
    assert 50 <= len(sweeping) <= 150  # about one in 32, chosen by the key
    assert rules.reads_every_watcher("lookup", {"conversion_key": sweeping[0]})  # the same again
    assert all(rules.reads_every_watcher(kind, {}) for kind in ("signal", "click", "forget"))


def test_new_and_changed_watchers_are_put_and_pruned_ones_deleted() -> None:
    kept, changed, pruned = watch(), watch(event_time=T + 1), watch(event_time=T + 2)
    changed = Watcher("k2", "0", 1, "em", "1", T, None, NOW_MS + HORIZON_MS)
    pruned = Watcher("k3", "0", 1, "em", "1", T, None, NOW_MS)
    added = Watcher("k4", "0", 1, "em", "1", T, None, NOW_MS + HORIZON_MS)
    stored = {w.name: w for w in (kept, changed, pruned)}
    answered = Watcher("k2", "0", 1, "em", "1", T, "u1", NOW_MS + HORIZON_MS)
    new = KeyState(watchers={w.name: w for w in (kept, answered, added)})
    puts, deletes = rules.watcher_writes(stored, new, lambda w: False)
    assert puts == {answered.name: answered, added.name: added}
    assert deletes == [pruned.name]


def test_a_watcher_the_input_concerns_is_put_even_unchanged() -> None:
    """A redelivery writes again what the first delivery may have left out of the changelog."""
    w = watch()
    puts, _ = rules.watcher_writes({w.name: w}, KeyState(watchers={w.name: w}), lambda _: True)
    assert puts == {w.name: w}


def test_a_deleted_identifier_deletes_every_watcher_it_had() -> None:
    w = watch()
    assert rules.watcher_writes({w.name: w}, None, lambda _: True) == ({}, [w.name])


def test_a_lookup_concerns_its_own_watcher_and_a_signal_those_at_or_after_it() -> None:
    own = rules.concerned_watchers("lookup", {"conversion_key": "k", "slot": "0"})
    assert own(watch()) and not own(Watcher("k", "1", 1, "em", "1", T, None, 0))
    late = rules.concerned_watchers("signal", {"ts_ms": T_MS})
    assert late(watch(event_time=T)) and not late(watch(event_time=T - 1))


inputs = st.lists(
    st.one_of(
        st.tuples(st.just("lookup"), st.integers(0, 40), st.integers(0, 3)),
        st.tuples(st.just("signal"), st.integers(0, 3), st.sampled_from(["u1", "u2"])),
        st.tuples(st.just("click"), st.integers(0, 3), st.sampled_from(["u1", "u2"])),
    ),
    max_size=30,
)


def apply_to_identifier(
    state: KeyState, kind: str, payload: dict[str, Any], now: int
) -> tuple[KeyState | None, list[Any]]:
    if kind == "lookup":
        return rules.on_lookup(state, payload, now, HORIZON_MS)
    if kind == "signal":
        return rules.on_signal(state, H, payload, now)
    return rules.on_click(state, H, payload, now)


@settings(max_examples=500)
@given(inputs)
def test_watchers_one_key_each_answer_as_one_value_with_all_of_them(
    steps: list[tuple[str, int, Any]],
) -> None:
    """The agent's split (keys value + a key per watcher, lookups reading only their own)
    sends the answers the whole identifier in one value would, over time and expiry."""
    whole = KeyState()
    value: Any = None
    table: dict[str, Watcher] = {}
    sent_whole: list[Any] = []
    sent_split: list[Any] = []
    for i, (kind, a, b) in enumerate(steps):
        now = NOW_MS + i * 3 * DAY_MS  # watchers expire along the way (7-day horizon)
        if kind == "lookup":
            payload: dict[str, Any] = {**lookup(event_time=T + b), "conversion_key": f"c{a}"}
        elif kind == "signal":
            payload = forwarded(signal(T_MS + a * 1000, user=b), i)
        else:
            payload = {**click(T_MS + a * 1000, user=b, engagement_id=f"e{i}"), "click_id": H}

        new_whole, sends = apply_to_identifier(whole, kind, payload, now)
        assert new_whole is not None
        whole = new_whole
        sent_whole += [(s.topic, s.key, s.value) for s in sends]

        if rules.reads_every_watcher(kind, payload):
            stored = dict(table)
        else:
            own = f"{payload['conversion_key']}|{payload['slot']}"
            stored = {own: table[own]} if own in table else {}
        current = state_module.decode_keys(value, stored)
        new, sends = apply_to_identifier(current, kind, payload, now)
        sent_split += [(s.topic, s.key, s.value) for s in sends]
        puts, deletes = rules.watcher_writes(stored, new, rules.concerned_watchers(kind, payload))
        table.update(puts)
        for name in deletes:
            del table[name]
        value = state_module.encode_keys(new)
    # Per conversion in the same order; across conversions (other keys, other
    # partitions) the table's order (a prefix read) may differ from a dict's.
    by_key = lambda sent: sorted(sent, key=lambda s: str(s[1]))  # noqa: E731 (stable sort)
    assert by_key(sent_split) == by_key(sent_whole)


ops = st.lists(
    st.tuples(
        st.integers(0, 20), st.sampled_from(["link", "unlink"]), st.sampled_from(["u1", "u2"])
    ),
    max_size=12,
)


@given(ops, st.randoms())
def test_fold_is_independent_of_arrival_order_for_distinct_timestamps(
    signals: list[tuple[int, str, str]], rnd: Any
) -> None:
    by_ts = {ts: (op, user) for ts, op, user in signals}
    items = [signal(ts, op=op, user=user) for ts, (op, user) in by_ts.items()]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    w = watch(event_time=1)  # 1000 ms: every signal ts (<= 20 ms) counts
    assert rules.answer(key_state(*items), w) == rules.answer(key_state(*shuffled), w)


@given(ops, st.randoms())
def test_folding_is_idempotent_under_redelivery(
    signals: list[tuple[int, str, str]], rnd: Any
) -> None:
    """Any signal forwarded again, in any order, leaves the history as it was."""
    items = [forwarded(signal(ts, op=op, user=user), i) for i, (ts, op, user) in enumerate(signals)]
    once = KeyState()
    for item in items:
        once, _ = rules.on_signal(once, H, item, NOW_MS)
    twice = once
    replay = list(items)
    rnd.shuffle(replay)
    for item in replay:
        twice, _ = rules.on_signal(twice, H, item, NOW_MS)
    assert twice == once


# --------------------------------------------------------------- owner


def owner(c: dict[str, Any], answers: dict[str, str | None] | None = None) -> OwnerState:
    state = rules.new_owner_state(c, None)
    return OwnerState(**{**_fields(state), "answers": dict(answers or {})})


def _fields(state: OwnerState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in OwnerState.__dataclass_fields__}


def test_combine_waits_for_every_slot() -> None:
    state = owner(conv(em=["e1"], ph=["p1"]), {"1": "u2"})
    assert rules.combine(state) is None


def test_combine_takes_the_first_slot_that_resolves() -> None:
    state = owner(conv(click_id="c", em=["e1"], ph=["p1"]), {"0": None, "1": "u1", "2": "u2"})
    assert rules.combine(state) == {"status": "matched", "key_type": "em", "user_id": "u1"}


def test_restricted_and_empty_conversions_are_unidentified_without_lookups() -> None:
    c = conv(em=["e1"])
    c["opt_out"] = True
    assert rules.combine(owner(c)) == {"status": "unidentified", "reason": "opt_out"}
    c = conv(em=["e1"])
    c["ldp"] = True
    assert rules.combine(owner(c)) == {"status": "unidentified", "reason": "ldp"}
    assert rules.combine(owner(conv())) == {"status": "unidentified", "reason": "no_identifiers"}
    assert rules.combine(owner(conv(em=["e"]), {"0": None}))["reason"] == "no_match"  # type: ignore[index]


def test_an_acceptance_asks_each_identifier_in_slot_order() -> None:
    state, sends = rules.on_accepted(None, "k", conv(em=["e1"], ph=["p1"]), NOW_MS)
    assert [(s.topic, s.key, s.value["slot"]) for s in sends] == [
        ("identity.lookups", "e1", "0"),
        ("identity.lookups", "p1", "1"),
    ]
    assert sends[0].value == {
        "conversion_key": "k",
        "slot": "0",
        "gen": 1,
        "signal_type": "em",
        "ad_account_id": "1",
        "event_time": T,
    }
    assert state.gen == 1 and state.dirty


def test_the_same_acceptance_again_changes_nothing() -> None:
    state, _ = rules.on_accepted(None, "k", conv(em=["e1"]), NOW_MS)
    again, sends = rules.on_accepted(state, "k", conv(em=["e1"]), NOW_MS)
    assert again is state and sends == []


def test_a_conversion_without_identifiers_is_published_unidentified_at_once() -> None:
    _, sends = rules.on_accepted(None, "k", conv(), NOW_MS)
    [result] = sends
    assert result.topic == "attribution.results" and result.value["reason"] == "no_identifiers"


def test_the_last_answer_assigns_the_conversion_to_its_user() -> None:
    state, _ = rules.on_accepted(None, "k", conv(em=["e1"]), NOW_MS)
    answer = {"conversion_key": "k", "slot": "0", "gen": 1, "user_id": "u1"}
    state, [assign] = rules.on_answer(state, "k", answer, NOW_MS)  # type: ignore[misc]
    assert (assign.topic, assign.key, assign.value["op"]) == (
        "attribution.assignments",
        "u1",
        "assign",
    )
    assert state is not None and state.user == "u1" and not state.dirty


def test_an_answer_for_a_superseded_acceptance_is_dropped() -> None:
    state, _ = rules.on_accepted(None, "k", conv(em=["e1"]), NOW_MS)
    stale = {"conversion_key": "k", "slot": "0", "gen": 0, "user_id": "u1"}
    assert rules.on_answer(state, "k", stale, NOW_MS) == (state, [])
    assert rules.on_answer(None, "k", stale, NOW_MS) == (None, [])


def test_moving_a_conversion_retracts_it_from_the_old_user_with_a_higher_version() -> None:
    state = owner(conv(em=["e1"]))
    state, first = rules.on_result(
        state, {"status": "matched", "key_type": "em", "user_id": "u1"}, "k", NOW_MS
    )
    assert [(s.topic, s.key) for s in first] == [("attribution.assignments", "u1")]
    state, second = rules.on_result(
        state, {"status": "matched", "key_type": "em", "user_id": "u2"}, "k", NOW_MS
    )
    assert [(s.topic, s.key, s.value["op"]) for s in second] == [
        ("attribution.assignments", "u1", "retract"),
        ("attribution.assignments", "u2", "assign"),
    ]
    assert second[1].value["mv"] > first[0].value["mv"]
    assert "ids" not in second[1].value["conv"]


def test_unchanged_result_sends_nothing_and_unmatching_publishes_unidentified() -> None:
    state = owner(conv(em=["e1"]))
    matched = {"status": "matched", "key_type": "em", "user_id": "u1"}
    state, _ = rules.on_result(state, matched, "k", NOW_MS)
    assert rules.on_result(state, matched, "k", NOW_MS) == (state, [])
    state, sends = rules.on_result(
        state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS
    )
    assert [(s.topic, s.key) for s in sends] == [
        ("attribution.assignments", "u1"),
        ("attribution.results", "k"),
    ]
    assert sends[1].value["order"] == [state.mv, 0]


def test_superseding_acceptance_keeps_match_version_growing() -> None:
    state = owner(conv(em=["e1"]))
    state, _ = rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    again = rules.new_owner_state(conv(em=["e1"]), state)
    assert again.gen == state.gen + 1 and again.dirty
    again, sends = rules.on_result(
        again, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS
    )
    assert sends and again.mv == state.mv + 1  # same clock: one more


def test_a_decision_recomputed_after_a_crash_outranks_the_decisions_made_before_it() -> None:
    """The owner's state came back from before two decisions; its next one ranks above them."""
    restored = owner(conv(em=["e1"]))
    restored, _ = rules.on_result(
        restored, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS
    )
    state, first = rules.on_result(
        restored, {"status": "matched", "key_type": "em", "user_id": "u"}, "k", NOW_MS
    )
    state, _ = rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    _, late = rules.on_result(
        restored, {"status": "matched", "key_type": "em", "user_id": "u"}, "k", NOW_MS + 5_000
    )
    assert late[0].value["mv"] > state.mv > first[0].value["mv"]


# --------------------------------------------------------------- deletion


def test_forget_user_drops_their_links_and_tells_owners_without_rematching() -> None:
    state = key_state(signal(1, user="gone"), signal(2, user="stays", key_type="ph"))
    state, _ = rules.on_click(state, H, click(1, "gone"), NOW_MS)
    state, _ = rules.on_lookup(state, lookup(), NOW_MS, HORIZON_MS)  # answered "gone"
    after, scrubs = rules.on_forget(state, H, "gone")
    assert [(s.topic, s.key, s.value) for s in scrubs] == [
        ("identity.answers", "k", {"op": "forget_user", "conversion_key": "k", "user_id": "gone"})
    ]
    assert after is not None and {s.user_id for s in after.signals} == {"stays"}
    assert after.clicks == ()
    assert after.watchers["k|0"].last is None


def test_an_identifier_left_without_links_is_deleted_whole() -> None:
    lonely, _ = rules.on_lookup(key_state(signal(1, user="gone")), lookup(), NOW_MS, HORIZON_MS)
    after, _ = rules.on_forget(lonely, H, "gone")
    assert after is None


def test_owner_forgets_user_id_and_identifiers_but_keeps_its_result() -> None:
    state = owner(conv(em=["e1"], ph=["p1"]), {"0": "gone", "1": "gone"})
    result = rules.combine(state)
    assert result is not None
    state, _ = rules.on_result(state, result, "k", NOW_MS)
    scrubbed = rules.on_owner_forget(state, "gone")
    assert scrubbed is not None
    assert "gone" not in str(scrubbed) and "e1" not in str(scrubbed)
    assert scrubbed.result is not None and scrubbed.result["key_type"] == "em"
    assert len(scrubbed.slots) == 2 and scrubbed.slots[0].key_type == "em"


def test_a_forget_up_to_a_time_keeps_the_users_later_links_and_indexes_them_again() -> None:
    """The user index's answer to a link from before a deletion: that link goes,
    a link after the deletion (the user's return) stays and is indexed."""
    state = key_state(signal(1, user="gone"), signal(5, user="gone"))
    state, _ = rules.on_lookup(state, lookup(), NOW_MS, HORIZON_MS)  # answered "gone" (at 5)
    after, sends = rules.on_forget(state, H, "gone", up_to_ms=3)
    assert after is not None and [s.ts_ms for s in after.signals] == [5]
    assert [(s.topic, s.key, s.value) for s in sends] == [
        ("identity.user_keys", "gone", {"user_id": "gone", "key": H, "ts_ms": 5})
    ]
    assert after.watchers["k|0"].last == "gone"  # still its answer, through the later link


def test_a_forget_up_to_a_time_scrubs_the_conversions_from_before_it_that_the_link_answered() -> (
    None
):
    state = key_state(signal(1, user="gone"), signal(T_MS + 1, user="gone"))
    state, _ = rules.on_lookup(state, lookup(), NOW_MS, HORIZON_MS)  # answered by the link at 1
    after, sends = rules.on_forget(state, H, "gone", up_to_ms=T_MS)
    assert [s.value for s in sends if s.topic == "identity.answers"] == [
        {"op": "forget_user", "conversion_key": "k", "user_id": "gone"}
    ]
    assert after is not None and after.watchers["k|0"].last is None


def test_a_conversion_after_the_deletion_that_a_forgotten_link_answered_is_answered_again() -> None:
    """A replayed link reached the identifier before its forget and answered a
    conversion from after the deletion: that conversion is decided again."""
    state = key_state(signal(1, user="gone"))
    state, _ = rules.on_lookup(state, lookup(), NOW_MS, HORIZON_MS)  # answered "gone"
    after, sends = rules.on_forget(state, H, "gone", up_to_ms=3)
    assert after is None  # no link left
    assert [s.value for s in sends] == [
        {"conversion_key": "k", "slot": "0", "gen": 1, "user_id": None}
    ]


def test_a_replayed_link_older_than_the_users_links_here_is_indexed_again() -> None:
    """Its time must reach the user index, or it would hide behind the user's
    later links (of a return after a deletion)."""
    state = key_state(signal(50))
    state, sends = rules.on_signal(state, H, forwarded(signal(10), 7), NOW_MS)
    assert [(s.topic, s.value["ts_ms"]) for s in sends] == [("identity.user_keys", 10)]
    _, sends = rules.on_signal(state, H, forwarded(signal(20), 8), NOW_MS)
    assert sends == []


def index_record(key: str, ts_ms: int | None = 10) -> dict[str, Any]:
    record: dict[str, Any] = {"user_id": "gone", "key": key}
    return record if ts_ms is None else {**record, "ts_ms": ts_ms}


def test_a_user_index_lists_each_identifier_once() -> None:
    index, _ = rules.on_user_key((), None, index_record("a"))
    index, _ = rules.on_user_key(index, None, index_record("b"))
    assert rules.on_user_key(index, None, index_record("a")) == (("a", "b"), [])


def test_a_link_from_before_a_users_deletion_is_forgotten_not_indexed() -> None:
    """A replay, or a link that reached the index just after the deletion."""
    index, sends = rules.on_user_key((), 10, index_record("a", ts_ms=10))
    assert index == ()
    forget = {"op": "forget_user", "user_id": "gone", "up_to_ms": 10}
    assert [(s.topic, s.key, s.value) for s in sends] == [("identity.lookups", "a", forget)]


def test_a_link_without_its_time_counts_as_from_before_the_deletion() -> None:
    _, sends = rules.on_user_key((), 10, index_record("a", ts_ms=None))
    assert [s.value["up_to_ms"] for s in sends] == [10]


def test_a_link_after_a_users_deletion_is_their_return_and_is_indexed() -> None:
    assert rules.on_user_key((), 10, index_record("a", ts_ms=11)) == (("a",), [])


def test_a_deletion_covers_up_to_the_later_of_its_request_and_processing_times() -> None:
    assert rules.deleted_up_to(None, 5, NOW_MS) == NOW_MS
    assert rules.deleted_up_to(None, NOW_MS + 9, NOW_MS) == NOW_MS + 9


def test_a_deletion_processed_again_keeps_its_time() -> None:
    """A redelivery or a replay must not stretch it over the user's return."""
    assert rules.deleted_up_to(NOW_MS - 60_000, NOW_MS - 70_000, NOW_MS) == NOW_MS - 60_000


def test_a_later_deletion_of_the_same_user_moves_the_time_on() -> None:
    assert rules.deleted_up_to(NOW_MS - 60_000, NOW_MS - 10, NOW_MS) == NOW_MS


def test_a_delete_asks_every_identifier_to_forget_and_leaves_a_receipt() -> None:
    index, sends = rules.on_delete(("a", "b"), "gone", "r-1", NOW_MS)
    assert index == ()
    forget = {"op": "forget_user", "user_id": "gone"}  # every link, whatever its time
    assert [(s.topic, s.key, s.value) for s in sends] == [
        ("identity.lookups", "a", forget),
        ("identity.lookups", "b", forget),
        (
            "privacy.receipts",
            "r-1",
            {
                "request_id": "r-1",
                "service": "identity_match",
                "completed_at_ms": NOW_MS,
                "identifiers": 2,
            },
        ),
    ]


def test_a_delete_without_request_id_has_no_receipt() -> None:
    _, sends = rules.on_delete(("a",), "gone", None, NOW_MS)
    assert [s.topic for s in sends] == ["identity.lookups"]


def test_clicks_are_kept_in_arrival_order() -> None:
    state, _ = rules.on_click(KeyState(), "c", click(5, engagement_id="e2"), NOW_MS)
    state, _ = rules.on_click(state, "c", click(1, engagement_id="e1"), NOW_MS)
    assert state.clicks == (Click(5, "u1", "e2"), Click(1, "u1", "e1"))


def test_an_owner_keeps_its_conversions_identifiers_only_in_its_slots() -> None:
    state, _ = rules.on_accepted(None, "k", conv(em=["e1"], ph=["p1"]), NOW_MS)
    assert "ids" not in state.conv
    assert [slot.identifier for slot in state.slots] == ["e1", "p1"]
    assert state.conv["raw_ref"] == "r:0:1"  # a redelivery is still recognised
    assert rules.on_accepted(state, "k", conv(em=["e1"], ph=["p1"]), NOW_MS) == (state, [])


def test_an_unidentified_result_carries_no_identifiers_even_from_an_older_state() -> None:
    older = replace(owner(conv(em=["e1"])), conv=conv(em=["e1"]))  # stored with its ids
    _, sends = rules.on_result(older, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    assert [s.topic for s in sends] == ["attribution.results"]
    assert "ids" not in sends[0].value["conv"] and "e1" not in str(sends[0].value)


def test_forgetting_a_user_drops_the_identifiers_of_an_older_state() -> None:
    older = replace(owner(conv(em=["e1"]), {"0": "gone"}), conv=conv(em=["e1"]))
    scrubbed = rules.on_owner_forget(older, "gone")
    assert scrubbed is not None and "e1" not in str(scrubbed)
