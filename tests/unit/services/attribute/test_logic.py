"""Attribution rules (services/attribute/logic.py)."""

from hypothesis import given
from hypothesis import strategies as st

from services.attribute import logic
from shared.contract.limits import ENGAGEMENT_RETENTION_MS

DAY_MS = 86_400_000
T = 1_700_000_000
T_MS = T * 1000
NOW_MS = T_MS + 60_000  # the wall clock of the worker (version stamps)
WINDOWS = logic.windows_ms()


def windows_of(_ad_account_id):
    return WINDOWS


def eng(eid, ts_ms, kind="click", account="1"):
    return {
        "engagement_id": eid,
        "user_id": "u1",
        "ad_account_id": account,
        "campaign_id": f"c-{eid}",
        "ad_group_id": f"g-{eid}",
        "ad_id": f"a-{eid}",
        "type": kind,
        "ts_ms": ts_ms,
    }


def engagements(*items):
    state = logic.new_user_state()
    for item in items:
        logic.add_engagement(state, item, windows_of, NOW_MS)
    return state["eng"]


def best(*items, event_time=T):
    touch = logic.best_touch(engagements(*items), "1", event_time, WINDOWS)
    return touch["engagement_id"] if touch else None


def test_click_beats_a_later_view_and_engagement():
    assert (
        best(
            eng("c", T_MS - 5 * DAY_MS),
            eng("v", T_MS - 1, "view"),
            eng("e", T_MS - 2, "engagement"),
        )
        == "c"
    )


def test_latest_touch_wins_within_a_class_then_greatest_id():
    assert best(eng("a", T_MS - 10), eng("b", T_MS - 5)) == "b"
    assert best(eng("a", T_MS - 5), eng("b", T_MS - 5)) == "b"


def test_windows_are_inclusive_and_per_class():
    assert best(eng("c", T_MS - 30 * DAY_MS)) == "c"
    assert best(eng("c", T_MS - 30 * DAY_MS - 1)) is None
    assert best(eng("v", T_MS - DAY_MS, "view")) == "v"
    assert best(eng("v", T_MS - DAY_MS - 1, "view")) is None


def test_touch_after_the_conversion_or_of_another_account_is_no_candidate():
    assert best(eng("c", T_MS + 1)) is None
    assert best(eng("c", T_MS - 1, account="2")) is None
    assert best(eng("c", T_MS)) == "c"


def test_window_zero_turns_a_class_off_and_bad_windows_are_refused():
    windows = logic.windows_ms({"view": 0})
    touch = logic.best_touch(engagements(eng("v", T_MS, "view")), "1", T, windows)
    assert touch is None
    try:
        logic.windows_ms({"click": 3})
    except ValueError:
        pass
    else:
        raise AssertionError("a 3-day window must be refused")


def assignment(key="k", mv=1):
    conv = {"ad_account_id": "1", "event_time": T}
    return {"op": "assign", "conversion_key": key, "mv": mv, "key_type": "em", "conv": conv}


def test_assign_attributes_and_late_engagement_reattributes_with_higher_version():
    state = logic.new_user_state()
    logic.add_engagement(state, eng("v", T_MS - 10, "view"), windows_of, NOW_MS)
    first = logic.assign(state, assignment(), windows_of, expires_ms=2 * T_MS, at_ms=NOW_MS)
    assert first["status"] == "attributed" and first["touch"]["engagement_id"] == "v"
    changed = logic.add_engagement(state, eng("c", T_MS - 20 * DAY_MS), windows_of, NOW_MS)
    assert [(k, r["touch"]["engagement_id"]) for k, r in changed] == [("k", "c")]
    assert changed[0][1]["order"] > first["order"]


def test_engagement_that_does_not_change_the_touch_emits_nothing():
    state = logic.new_user_state()
    logic.add_engagement(state, eng("c", T_MS - 10), windows_of, NOW_MS)
    logic.assign(state, assignment(), windows_of, expires_ms=2 * T_MS, at_ms=NOW_MS)
    assert logic.add_engagement(state, eng("v", T_MS - 1, "view"), windows_of, NOW_MS) == []


def test_stale_assign_and_retract_are_ignored():
    state = logic.new_user_state()
    assert logic.assign(state, assignment(mv=2), windows_of, 2 * T_MS, NOW_MS) is not None
    assert logic.assign(state, assignment(mv=1), windows_of, 2 * T_MS, NOW_MS) is None
    logic.retract(state, {"conversion_key": "k", "mv": 2})
    assert "k" in state["convs"]
    logic.retract(state, {"conversion_key": "k", "mv": 3})
    assert "k" not in state["convs"]


def test_no_candidate_means_unattributed():
    state = logic.new_user_state()
    result = logic.assign(state, assignment(), windows_of, 2 * T_MS, NOW_MS)
    assert result["status"] == "unattributed" and result["touch"] is None


def test_latest_privacy_request_by_time_decides_user_opt_out():
    state = logic.new_user_state()
    logic.assign(state, assignment(), windows_of, 2 * T_MS, NOW_MS)
    opt_out = {"kind": "opt_out", "ts_ms": 10}
    changed = logic.add_privacy_request(state, opt_out, 0, windows_of, NOW_MS)
    assert changed[0][1]["status"] == "unidentified"
    assert changed[0][1]["reason"] == "user_opt_out"
    # An older opt_in arriving later does not undo the newer opt_out.
    older, newer = {"kind": "opt_in", "ts_ms": 5}, {"kind": "opt_in", "ts_ms": 11}
    assert logic.add_privacy_request(state, older, 1, windows_of, NOW_MS) == []
    changed = logic.add_privacy_request(state, newer, 2, windows_of, NOW_MS)
    assert changed[0][1]["status"] == "unattributed"


def test_trim_drops_old_engagements_and_expired_conversions():
    state = logic.new_user_state()
    logic.add_engagement(state, eng("old", 0), windows_of, NOW_MS)
    logic.assign(state, assignment(), windows_of, expires_ms=5, at_ms=NOW_MS)
    logic.trim(state, now_ms=ENGAGEMENT_RETENTION_MS + 10)
    assert state["eng"] == {} and state["convs"] == {}


touches = st.lists(
    st.tuples(st.sampled_from(["click", "engagement", "view"]), st.integers(0, 40 * DAY_MS)),
    min_size=1,
    max_size=15,
)


@given(touches, st.randoms())
def test_result_does_not_depend_on_engagement_arrival_order(items, rnd):
    all_engs = [eng(f"e{i}", T_MS - offset, kind) for i, (kind, offset) in enumerate(items)]
    shuffled = list(all_engs)
    rnd.shuffle(shuffled)

    def run(order):
        state = logic.new_user_state()
        results = [logic.assign(state, assignment(), windows_of, 2 * T_MS, NOW_MS)]
        for item in order:
            results.extend(r for _k, r in logic.add_engagement(state, item, windows_of, NOW_MS))
        return results[-1]

    a, b = run(all_engs), run(shuffled)
    assert (a["status"], a["touch"]) == (b["status"], b["touch"])


@given(touches)
def test_chosen_touch_is_a_candidate_of_the_highest_class_present(items):
    all_engs = [eng(f"e{i}", T_MS - offset, kind) for i, (kind, offset) in enumerate(items)]
    state = engagements(*all_engs)
    touch = logic.best_touch(state, "1", T, WINDOWS)
    candidates = [e for e in state.values() if logic.is_candidate(e, "1", T, WINDOWS)]
    if not candidates:
        assert touch is None
    else:
        top = max(logic.CLASS_RANK[e[1]] for e in candidates)
        assert logic.CLASS_RANK[touch["type"]] == top


def test_deleted_user_lists_every_conversion_ever_assigned_even_past_the_horizon():
    state = logic.new_user_state()
    logic.assign(state, assignment("k1"), windows_of, expires_ms=5, at_ms=NOW_MS)
    logic.assign(state, assignment("k2"), windows_of, expires_ms=2 * T_MS, at_ms=NOW_MS)
    logic.trim(state, now_ms=10)
    assert list(state["convs"]) == ["k2"]
    assert logic.delete_user(state) == ["k1", "k2"]


def test_scrub_re_emits_only_records_naming_the_user_with_a_higher_version():
    last = {"version": 7, "match": {"key_type": "em", "user": "k0.abc"}, "status": "attributed"}
    again = logic.scrubbed(last, "k0.abc", NOW_MS)
    assert again["match"] == {"key_type": "em", "user": None} and again["version"] == NOW_MS
    assert logic.scrubbed(again, "k0.abc", 0) is None
    assert logic.scrubbed(last, "k0.other", NOW_MS) is None
    assert logic.scrubbed(None, "k0.abc", NOW_MS) is None


def test_each_ad_account_uses_its_own_windows():
    short = logic.windows_ms({"click": 1})
    state = logic.new_user_state()
    logic.add_engagement(state, eng("c", T_MS - 2 * DAY_MS), windows_of, NOW_MS)
    per_account = {"1": short}

    def of(account):
        return per_account.get(account, WINDOWS)

    result = logic.assign(state, assignment(), of, 2 * T_MS, NOW_MS)
    assert result["status"] == "unattributed"  # 2 days > this account's 1-day click window
    result = logic.assign(state, assignment("k2", mv=1), windows_of, 2 * T_MS, NOW_MS)
    assert result["status"] == "attributed"


def test_account_settings_records_parse_to_windows_and_bad_ones_are_refused():
    parsed = logic.parse_account_settings(b'{"windows": {"click": 7, "view": 0}}')
    assert parsed == {"click": 7 * DAY_MS, "engagement": 30 * DAY_MS, "view": 0}
    for bad in (b'{"windows": {"click": 3}}', b'{"windows": {"bogus": 1}}', b"[]"):
        try:
            logic.parse_account_settings(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} must be refused")


def test_publisher_takes_a_result_only_if_its_order_is_higher():
    published = {"order": [5, 7], "record": {}}
    assert logic.is_newer([5, 8], published) and logic.is_newer([6, 0], published)
    assert not logic.is_newer([5, 7], published) and not logic.is_newer([4, 99], published)
    assert logic.is_newer([1, 0], None)


def test_a_reattribution_stamp_outranks_the_state_it_was_recomputed_from():
    state = logic.new_user_state()
    first = logic.assign(state, assignment(), windows_of, 2 * T_MS, NOW_MS)
    later = logic.add_engagement(state, eng("c", T_MS - 10), windows_of, NOW_MS + 1_000)
    assert later[0][1]["order"] == [first["order"][0], NOW_MS + 1_000]


def test_an_assignment_recomputed_after_a_crash_outranks_its_first_result():
    """Before the crash: assigned, then unattributed. After it, from state without the
    assignment, the engagement comes first: the attributed result must rank higher."""
    before = logic.new_user_state()
    unattributed = logic.assign(before, assignment(), windows_of, 2 * T_MS, NOW_MS)
    after = logic.new_user_state()
    logic.add_engagement(after, eng("c", T_MS - 10), windows_of, NOW_MS + 5_000)
    attributed = logic.assign(after, assignment(), windows_of, 2 * T_MS, NOW_MS + 5_000)
    assert unattributed["status"] == "unattributed" and attributed["status"] == "attributed"
    assert logic.is_newer(attributed["order"], {"order": unattributed["order"]})
