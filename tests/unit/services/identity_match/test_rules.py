"""Matching rules (services/identity_match/rules.py)."""

from hypothesis import given
from hypothesis import strategies as st

from services.identity_match import rules

NOW_MS = 1_800_000_000_000  # the wall clock of the worker (version stamps)

DAY_MS = 86_400_000
T = 1_700_000_000  # a conversion's event_time (seconds)
T_MS = T * 1000
H = "a" * 64


def conv(**ids):
    base = {
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


def signal(ts_ms, op="link", user="u1", key_type="em", account=None):
    return {
        "user_id": user,
        "key_type": key_type,
        "key": H,
        "op": op,
        "ts_ms": ts_ms,
        "ad_account_id": account,
    }


def key_state(*signals):
    state = rules.new_key_state()
    for offset, s in enumerate(signals):
        rules.add_signal(state, s, offset)
    return state


def watch(signal_type="em", account="1", event_time=T):
    return {"signal_type": signal_type, "ad_account_id": account, "event_time": event_time}


def test_slots_follow_priority_then_array_order():
    c = conv(
        em=["e1", "e2"],
        click_id="epik",
        ph=["p1"],
        ip_ua="ipua",
        external_id=["x1"],
        hashed_maids=["m1"],
    )
    assert [s[0] for s in rules.slots(c)] == [
        "click_id",
        "external_id",
        "em",
        "em",
        "ph",
        "hashed_maid",
        "ip_ua",
    ]
    assert [s[2] for s in rules.slots(c)][2:4] == ["e1", "e2"]


def test_hashed_maids_look_up_hashed_maid_signals():
    assert rules.slots(conv(hashed_maids=["m"]))[0][1] == "hashed_maid"


def test_link_points_key_at_user_as_of_event_time():
    assert rules.answer(key_state(signal(T_MS - 1)), watch()) == "u1"


def test_link_made_after_the_conversion_does_not_claim_it():
    assert rules.answer(key_state(signal(T_MS + 1)), watch()) is None


def test_link_at_exactly_event_time_counts():
    assert rules.answer(key_state(signal(T_MS)), watch()) == "u1"


def test_unlink_clears_only_its_own_user():
    state = key_state(signal(1, user="u1"), signal(2, op="unlink", user="u2"))
    assert rules.answer(state, watch()) == "u1"
    state = key_state(signal(1, user="u1"), signal(2, op="unlink", user="u1"))
    assert rules.answer(state, watch()) is None


def test_relink_to_another_user_moves_the_key():
    state = key_state(signal(1, user="u1"), signal(2, user="u2"))
    assert rules.answer(state, watch()) == "u2"


def test_equal_timestamps_fold_in_arrival_order():
    state = key_state(signal(5, user="u1"), signal(5, user="u2"))
    assert rules.answer(state, watch()) == "u2"
    state = key_state(signal(5, user="u1"), signal(5, op="unlink", user="u1"))
    assert rules.answer(state, watch()) is None


def test_late_arriving_earlier_signal_is_folded_in_time_order():
    state = key_state(signal(10, user="u2"), signal(5, user="u1"))  # u1 arrives late
    assert rules.answer(state, watch()) == "u2"


def test_signals_of_another_key_type_are_ignored():
    assert rules.answer(key_state(signal(1, key_type="ph")), watch("em")) is None


def test_external_id_matches_only_its_own_ad_account():
    state = key_state(signal(1, key_type="external_id", account="2"))
    assert rules.answer(state, watch("external_id", account="1")) is None
    assert rules.answer(state, watch("external_id", account="2")) == "u1"


def test_ip_ua_is_valid_for_seven_days_inclusive():
    state = key_state(signal(T_MS - 7 * DAY_MS, key_type="ip_ua"))
    assert rules.answer(state, watch("ip_ua")) == "u1"
    state = key_state(signal(T_MS - 7 * DAY_MS - 1, key_type="ip_ua"))
    assert rules.answer(state, watch("ip_ua")) is None


def test_click_id_resolves_to_the_user_of_a_click_at_or_before_event_time():
    state = rules.new_key_state()
    rules.add_click(state, {"ts_ms": T_MS + 1, "user_id": "late", "engagement_id": "e2"})
    assert rules.answer(state, watch("click")) is None
    rules.add_click(state, {"ts_ms": T_MS, "user_id": "u1", "engagement_id": "e1"})
    assert rules.answer(state, watch("click")) == "u1"


def test_repeated_signal_offset_and_click_are_ignored():
    state = rules.new_key_state()
    assert rules.add_signal(state, signal(1), 7)
    assert not rules.add_signal(state, signal(1), 7)
    click = {"ts_ms": 1, "user_id": "u1", "engagement_id": "e1"}
    assert rules.add_click(state, click)
    assert not rules.add_click(state, click)


def owner(c, answers=None):
    state = rules.new_owner_state(c, None)
    for slot, user in (answers or {}).items():
        state["answers"][slot] = user
    return state


def test_combine_waits_for_every_slot():
    state = owner(conv(em=["e1"], ph=["p1"]), {"1": "u2"})
    assert rules.combine(state) is None


def test_combine_takes_the_first_slot_that_resolves():
    state = owner(conv(click_id="c", em=["e1"], ph=["p1"]), {"0": None, "1": "u1", "2": "u2"})
    assert rules.combine(state) == {"status": "matched", "key_type": "em", "user_id": "u1"}


def test_restricted_and_empty_conversions_are_unidentified_without_lookups():
    c = conv(em=["e1"])
    c["opt_out"] = True
    assert rules.combine(owner(c)) == {"status": "unidentified", "reason": "opt_out"}
    c = conv(em=["e1"])
    c["ldp"] = True
    assert rules.combine(owner(c)) == {"status": "unidentified", "reason": "ldp"}
    assert rules.combine(owner(conv())) == {"status": "unidentified", "reason": "no_identifiers"}
    assert rules.combine(owner(conv(em=["e"]), {"0": None}))["reason"] == "no_match"


def test_moving_a_conversion_retracts_it_from_the_old_user_with_a_higher_version():
    state = owner(conv(em=["e1"]))
    first = rules.on_result(
        state, {"status": "matched", "key_type": "em", "user_id": "u1"}, "k", NOW_MS
    )
    assert [(t, k) for t, k, _ in first] == [("attribution.assignments", "u1")]
    second = rules.on_result(
        state, {"status": "matched", "key_type": "em", "user_id": "u2"}, "k", NOW_MS
    )
    assert [(t, k, m["op"]) for t, k, m in second] == [
        ("attribution.assignments", "u1", "retract"),
        ("attribution.assignments", "u2", "assign"),
    ]
    assert second[1][2]["mv"] > first[0][2]["mv"]
    assert "ids" not in second[1][2]["conv"]


def test_unchanged_result_sends_nothing_and_unmatching_publishes_unidentified():
    state = owner(conv(em=["e1"]))
    matched = {"status": "matched", "key_type": "em", "user_id": "u1"}
    rules.on_result(state, matched, "k", NOW_MS)
    assert rules.on_result(state, matched, "k", NOW_MS) == []
    sends = rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    assert [(t, k) for t, k, _ in sends] == [
        ("attribution.assignments", "u1"),
        ("attribution.results", "k"),
    ]
    assert sends[1][2]["order"] == [state["mv"], 0]


def test_superseding_acceptance_keeps_match_version_growing():
    state = owner(conv(em=["e1"]))
    rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    again = rules.new_owner_state(conv(em=["e1"]), state)
    again["dirty"] = True
    assert again["gen"] == state["gen"] + 1
    sends = rules.on_result(again, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    assert sends and again["mv"] == state["mv"] + 1  # same clock: one more


ops = st.lists(
    st.tuples(
        st.integers(0, 20), st.sampled_from(["link", "unlink"]), st.sampled_from(["u1", "u2"])
    ),
    max_size=12,
)


@given(ops, st.randoms())
def test_fold_is_independent_of_arrival_order_for_distinct_timestamps(signals, rnd):
    by_ts = {ts: (op, user) for ts, op, user in signals}
    items = [signal(ts, op=op, user=user) for ts, (op, user) in by_ts.items()]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    w = watch(event_time=0)
    w["event_time"] = 1  # 1000 ms: every signal ts (<= 20 ms) counts
    assert rules.answer(key_state(*items), w) == rules.answer(key_state(*shuffled), w)


def test_forget_user_drops_their_links_and_tells_owners_without_rematching():
    state = key_state(signal(1, user="gone"), signal(2, user="stays", key_type="ph"))
    rules.add_click(state, {"ts_ms": 1, "user_id": "gone", "engagement_id": "e1"})
    state["watchers"]["k|0"] = {"conversion_key": "k", "last": "gone"}
    scrubs = rules.forget_user(state, "gone")
    assert scrubs == [{"op": "forget_user", "conversion_key": "k", "user_id": "gone"}]
    assert rules.users_of(state) == {"stays"} and rules.holds_links(state)
    assert state["watchers"]["k|0"]["last"] is None
    lonely = key_state(signal(1, user="gone"))
    rules.forget_user(lonely, "gone")
    assert not rules.holds_links(lonely)


def test_owner_forgets_user_id_and_identifiers_but_keeps_its_result():
    state = owner(conv(em=["e1"], ph=["p1"]), {"0": "gone", "1": "gone"})
    rules.on_result(state, rules.combine(state), "k", NOW_MS)
    rules.forget_user_in_owner(state, "gone")
    assert "gone" not in str(state) and "e1" not in str(state)
    assert state["result"]["key_type"] == "em" and len(state["slots"]) == 2


def test_a_decision_recomputed_after_a_crash_outranks_the_decisions_made_before_it():
    """The owner's state came back from before two decisions; its next one ranks above them."""
    state = owner(conv(em=["e1"]))
    rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    restored = {**state, "answers": dict(state["answers"])}
    first = rules.on_result(
        state, {"status": "matched", "key_type": "em", "user_id": "u"}, "k", NOW_MS
    )
    rules.on_result(state, {"status": "unidentified", "reason": "no_match"}, "k", NOW_MS)
    late = rules.on_result(
        restored, {"status": "matched", "key_type": "em", "user_id": "u"}, "k", NOW_MS + 5_000
    )
    assert late[0][2]["mv"] > state["mv"] > first[0][2]["mv"]
