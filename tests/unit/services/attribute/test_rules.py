"""Attribution rules (services/attribute/rules.py)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.attribute import rules
from services.attribute.state import Published, User
from shared.contract.keys import internal_user, lane_user
from shared.contract.limits import ENGAGEMENT_RETENTION_MS, MAX_BACKFILL_MS
from shared.contract.pseudonyms import DELETED_USERS_SCOPE, pseudonym, unscoped_pseudonyms
from shared.contract.records import Send

DAY_MS = 86_400_000
T = 1_700_000_000
T_MS = T * 1000
NOW_MS = T_MS + 60_000  # the wall clock of the worker (version stamps)
WINDOWS = rules.windows_ms()
KEYS = (("k1", "a-secret-of-at-least-thirty-two-bytes"),)


def windows_of(_ad_account_id: str) -> dict[str, int]:
    return WINDOWS


def ctx(now_ms: int = NOW_MS, of: rules.WindowsOf = windows_of) -> rules.Context:
    return rules.Context("u1", KEYS, of, now_ms, "i" * 32)


def eng(eid: str, ts_ms: int, kind: str = "click", account: str = "1") -> dict[str, Any]:
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


def with_engagements(*items: dict[str, Any], user: User | None = None) -> User:
    user = user or User()
    for item in items:
        user, _ = rules.on_engagement(user, item, ctx())
    return user


def best(*items: dict[str, Any], event_time: int = T) -> str | None:
    touch = rules.best_touch(with_engagements(*items).engagements, "1", event_time, WINDOWS)
    return touch["engagement_id"] if touch else None


def results(sends: list[Send]) -> list[dict[str, Any]]:
    assert all(s.topic == "attribution.results" for s in sends)
    return [s.value for s in sends]


def test_click_beats_a_later_view_and_engagement() -> None:
    assert (
        best(
            eng("c", T_MS - 5 * DAY_MS),
            eng("v", T_MS - 1, "view"),
            eng("e", T_MS - 2, "engagement"),
        )
        == "c"
    )


def test_latest_touch_wins_within_a_class_then_greatest_id() -> None:
    assert best(eng("a", T_MS - 10), eng("b", T_MS - 5)) == "b"
    assert best(eng("a", T_MS - 5), eng("b", T_MS - 5)) == "b"


def test_windows_are_inclusive_and_per_class() -> None:
    assert best(eng("c", T_MS - 30 * DAY_MS)) == "c"
    assert best(eng("c", T_MS - 30 * DAY_MS - 1)) is None
    assert best(eng("v", T_MS - DAY_MS, "view")) == "v"
    assert best(eng("v", T_MS - DAY_MS - 1, "view")) is None


def test_touch_after_the_conversion_or_of_another_account_is_no_candidate() -> None:
    assert best(eng("c", T_MS + 1)) is None
    assert best(eng("c", T_MS - 1, account="2")) is None
    assert best(eng("c", T_MS)) == "c"


def test_window_zero_turns_a_class_off_and_bad_windows_are_refused() -> None:
    windows = rules.windows_ms({"view": 0})
    engagements = with_engagements(eng("v", T_MS, "view")).engagements
    assert rules.best_touch(engagements, "1", T, windows) is None
    try:
        rules.windows_ms({"click": 3})
    except ValueError:
        pass
    else:
        raise AssertionError("a 3-day window must be refused")


def assignment(key: str = "k", mv: int = 1) -> dict[str, Any]:
    conv = {"ad_account_id": "1", "event_time": T}
    return {"op": "assign", "conversion_key": key, "mv": mv, "key_type": "em", "conv": conv}


def assign(user: User, msg: dict[str, Any] | None = None, **kw: Any) -> tuple[User, list[Any]]:
    expires_ms = kw.pop("expires_ms", 2 * T_MS)
    user, sends = rules.on_assign(user, msg or assignment(), ctx(**kw), expires_ms)
    return user, results(sends)


def test_assign_sends_the_result_with_the_user_as_a_pseudonym() -> None:
    user = with_engagements(eng("c", T_MS - 10))
    _, [result] = assign(user)
    assert result["status"] == "attributed" and result["reason"] is None
    assert result["match"] == {"key_type": "em", "user": pseudonym("1", "u1", KEYS)}
    assert result["conv"] == assignment()["conv"] and result["order"] == [1, NOW_MS]
    assert result["touch"]["engagement_id"] == "c" and result["touch"]["campaign_id"] == "c-c"


def test_assign_attributes_and_late_engagement_reattributes_with_higher_version() -> None:
    user = with_engagements(eng("v", T_MS - 10, "view"))
    user, [first] = assign(user)
    assert first["status"] == "attributed" and first["touch"]["engagement_id"] == "v"
    user, sends = rules.on_engagement(user, eng("c", T_MS - 20 * DAY_MS), ctx())
    assert [(s.key, s.value["touch"]["engagement_id"]) for s in sends] == [("k", "c")]
    assert sends[0].value["order"] > first["order"]


def test_engagement_that_does_not_change_the_touch_emits_nothing() -> None:
    user, _ = assign(with_engagements(eng("c", T_MS - 10)))
    assert rules.on_engagement(user, eng("v", T_MS - 1, "view"), ctx())[1] == []


def test_known_engagement_id_changes_nothing() -> None:
    user = with_engagements(eng("c", T_MS - 10))
    assert rules.on_engagement(user, eng("c", T_MS - 99), ctx()) == (user, [])


def test_stale_assign_and_retract_are_ignored() -> None:
    user, sent = assign(User(), assignment(mv=2))
    assert sent
    assert assign(user, assignment(mv=1))[1] == []
    user, _ = rules.on_retract(user, {"conversion_key": "k", "mv": 2})
    assert "k" in user.convs
    user, _ = rules.on_retract(user, {"conversion_key": "k", "mv": 3})
    assert "k" not in user.convs and user.named == ("k",)


def test_no_candidate_means_unattributed() -> None:
    _, [result] = assign(User())
    assert result["status"] == "unattributed" and result["touch"] is None


def test_latest_privacy_request_by_time_decides_user_opt_out() -> None:
    user, _ = assign(User())
    user, sends = rules.on_privacy_request(user, {"kind": "opt_out", "ts_ms": 10}, 0, ctx())
    [result] = results(sends)
    assert result["status"] == "unidentified" and result["reason"] == "user_opt_out"
    assert result["match"] is None
    # An older opt_in arriving later does not undo the newer opt_out.
    older, newer = {"kind": "opt_in", "ts_ms": 5}, {"kind": "opt_in", "ts_ms": 11}
    assert rules.on_privacy_request(user, older, 1, ctx())[1] == []
    _, sends = rules.on_privacy_request(user, newer, 2, ctx())
    assert results(sends)[0]["status"] == "unattributed"


def test_trim_drops_old_engagements_and_expired_conversions() -> None:
    user = with_engagements(eng("old", 0))
    user, _ = assign(user, expires_ms=5)
    user = rules.trim(user, now_ms=ENGAGEMENT_RETENTION_MS + 10)
    assert user.engagements == {} and user.convs == {}


def test_a_backfill_of_old_events_keeps_the_engagements_its_conversions_credit() -> None:
    """Engagements go by the data's time: a year-old click stays for its conversion."""
    user = with_engagements(eng("c1", T_MS - DAY_MS))
    user = rules.trim(user, now_ms=T_MS + 400 * DAY_MS)
    assert set(user.engagements) == {"c1"}
    _, [result] = assign(user, now_ms=T_MS + 400 * DAY_MS)
    assert result["status"] == "attributed" and result["touch"]["engagement_id"] == "c1"


def test_live_engagements_past_retention_of_the_newest_are_dropped() -> None:
    now = T_MS + 400 * DAY_MS
    user = with_engagements(eng("old", now - ENGAGEMENT_RETENTION_MS - 1), eng("new", now))
    assert set(rules.trim(user, now_ms=now).engagements) == {"new"}


def test_mis_dated_engagements_still_go_past_the_backfill_horizon() -> None:
    """Seconds sent as milliseconds (1970): a user with nothing newer does not keep them."""
    user = with_engagements(eng("s-as-ms", T), eng("also", T + 1))
    assert rules.trim(user, now_ms=T_MS).engagements == {}


def test_a_future_dated_engagement_trims_no_more_than_the_clock() -> None:
    now = T_MS
    user = with_engagements(
        eng("edge", now - ENGAGEMENT_RETENTION_MS), eng("ahead", now + 400 * DAY_MS)
    )
    assert set(rules.trim(user, now_ms=now).engagements) == {"edge", "ahead"}


@given(
    st.lists(st.integers(0, 600 * DAY_MS), min_size=1, max_size=8), st.integers(0, 1500 * DAY_MS)
)
def test_trim_keeps_what_is_within_retention_of_the_older_of_clock_and_newest(
    offsets: list[int], now_offset: int
) -> None:
    times = [T_MS + o for o in offsets]
    user = with_engagements(*(eng(f"e{i}", t) for i, t in enumerate(times)))
    now = T_MS + now_offset
    as_of = max(min(now, max(times)), now - MAX_BACKFILL_MS)
    kept = set(rules.trim(user, now_ms=now).engagements)
    assert kept == {f"e{i}" for i, t in enumerate(times) if t >= as_of - ENGAGEMENT_RETENTION_MS}
    # never more dropped than by the clock alone
    assert kept >= {f"e{i}" for i, t in enumerate(times) if t >= now - ENGAGEMENT_RETENTION_MS}


touches = st.lists(
    st.tuples(st.sampled_from(["click", "engagement", "view"]), st.integers(0, 40 * DAY_MS)),
    min_size=1,
    max_size=15,
)


@given(touches, st.randoms())
def test_result_does_not_depend_on_engagement_arrival_order(items: Any, rnd: Any) -> None:
    all_engs = [eng(f"e{i}", T_MS - offset, kind) for i, (kind, offset) in enumerate(items)]
    shuffled = list(all_engs)
    rnd.shuffle(shuffled)

    def run(order: list[dict[str, Any]]) -> dict[str, Any]:
        user, sent = assign(User())
        for item in order:
            user, sends = rules.on_engagement(user, item, ctx())
            sent.extend(results(sends))
        return sent[-1]

    a, b = run(all_engs), run(shuffled)
    assert (a["status"], a["touch"]) == (b["status"], b["touch"])


@given(touches)
def test_chosen_touch_is_a_candidate_of_the_highest_class_present(items: Any) -> None:
    all_engs = [eng(f"e{i}", T_MS - offset, kind) for i, (kind, offset) in enumerate(items)]
    engagements = with_engagements(*all_engs).engagements
    touch = rules.best_touch(engagements, "1", T, WINDOWS)
    candidates = [e for e in engagements.values() if rules.is_candidate(e, "1", T, WINDOWS)]
    if not candidates:
        assert touch is None
    else:
        top = max(rules.CLASS_RANK[e.type] for e in candidates)
        assert touch is not None and rules.CLASS_RANK[touch["type"]] == top


def test_deleted_user_lists_every_conversion_ever_assigned_even_past_the_horizon() -> None:
    user, _ = assign(User(), assignment("k1"), expires_ms=5)
    user, _ = assign(user, assignment("k2"))
    user = rules.trim(user, now_ms=10)
    assert list(user.convs) == ["k2"]
    assert rules.named_conversions(user) == ["k1", "k2"]


DELETE = {"request_id": "r-1", "user_id": "u1", "kind": "delete", "ts_ms": T_MS}


def test_delete_leaves_no_state_and_scrubs_every_named_conversion() -> None:
    user, _ = assign(User(), assignment("k1"), expires_ms=5)
    user, _ = assign(user, assignment("k2"))
    new, sends = rules.on_delete(rules.trim(user, now_ms=10), DELETE, ctx())
    assert new is None
    scrubbed = [s.key for s in sends if s.topic == "attribution.results"]
    forgotten = [s.key for s in sends if s.topic == "identity.answers"]
    assert scrubbed == forgotten == ["k1", "k2"]
    assert all("u1" not in str(s.value) for s in sends if s.topic == "attribution.results")


def candidate(order: list[int]) -> dict[str, Any]:
    conv = {
        "ad_account_id": "1",
        "event_id": "e",
        "event_name": "lead",
        "action_source": "web",
        "source": "api",
        "event_time": T,
    }
    return {"conv": conv, "status": "unattributed", "reason": None, "touch": None,
            "match": {"key_type": "em", "user": "k0.abc"}, "order": order}  # fmt: skip


#: What the publisher holds after publishing candidate [5, 7] at time 7.
PUBLISHED = rules.on_result(None, "ck", candidate([5, 7]), 7)[0]
assert PUBLISHED is not None and PUBLISHED.record["version"] == 7


def test_scrub_re_emits_only_records_naming_the_user_with_a_higher_version() -> None:
    scrub = {"op": "scrub", "users": ["k1.new", "k0.abc"]}
    again, [sent] = rules.on_scrub(PUBLISHED, "ck", scrub, NOW_MS)
    assert again is not None and again.order == PUBLISHED.order and sent.value == again.record
    assert again.record["match"] == {"key_type": "em", "user": None}
    assert again.record["version"] == again.record["processed_at_ms"] == NOW_MS
    assert rules.on_scrub(again, "ck", scrub, 0)[1] == []
    assert rules.on_scrub(PUBLISHED, "ck", {"op": "scrub", "users": ["k0.other"]}, NOW_MS)[1] == []
    assert rules.on_scrub(None, "ck", scrub, NOW_MS) == (None, [])


def test_a_scrub_of_before_key_rotations_were_handled_still_applies() -> None:
    _, [sent] = rules.on_scrub(PUBLISHED, "ck", {"op": "scrub", "user": "k0.abc"}, NOW_MS)
    assert sent.value["match"]["user"] is None


def test_scrub_names_the_user_under_every_key_and_in_the_unscoped_form() -> None:
    k2 = ("k2", "another-secret-of-at-least-thirty-two-bytes")
    users = rules.scrub_message("1", "u1", (k2, *KEYS))["users"]
    assert users[:2] == [pseudonym("1", "u1", (k2,)), pseudonym("1", "u1", KEYS)]
    assert users[2:] == list(unscoped_pseudonyms("u1", (k2, *KEYS)))


def test_each_ad_account_uses_its_own_windows() -> None:
    short = rules.windows_ms({"click": 1})
    user = with_engagements(eng("c", T_MS - 2 * DAY_MS))
    per_account = {"1": short}

    def of(account: str) -> dict[str, int]:
        return per_account.get(account, WINDOWS)

    _, [result] = assign(user, of=of)
    assert result["status"] == "unattributed"  # 2 days > this account's 1-day click window
    _, [result] = assign(user, assignment("k2", mv=1))
    assert result["status"] == "attributed"


def test_account_settings_records_parse_to_windows_and_bad_ones_are_refused() -> None:
    parsed = rules.parse_account_settings(b'{"windows": {"click": 7, "view": 0}}')
    assert parsed == {"click": 7 * DAY_MS, "engagement": 30 * DAY_MS, "view": 0}
    for bad in (b'{"windows": {"click": 3}}', b'{"windows": {"bogus": 1}}', b"[]"):
        try:
            rules.parse_account_settings(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} must be refused")


def test_publisher_takes_a_result_only_if_its_order_is_higher() -> None:
    assert rules.is_newer([5, 8], PUBLISHED) and rules.is_newer([6, 0], PUBLISHED)
    assert not rules.is_newer([5, 7], PUBLISHED) and not rules.is_newer([4, 99], PUBLISHED)
    assert rules.is_newer([1, 0], None)


def test_publisher_result_is_a_record_with_a_growing_version() -> None:
    new, [sent] = rules.on_result(PUBLISHED, "ck", candidate([6, 0]), NOW_MS)
    assert new is not None and new.order == (6, 0) and sent.topic == "conversions.attributed"
    assert sent.value["conversion_key"] == "ck" and sent.value["version"] == NOW_MS
    assert rules.on_result(PUBLISHED, "ck", candidate([5, 7]), NOW_MS) == (PUBLISHED, [])


def test_a_published_record_tells_aggregate_its_deltas_then_its_fact() -> None:
    new, [sent] = rules.on_result(PUBLISHED, "ck", candidate([6, 0]), NOW_MS)
    inputs = rules.aggregate_inputs(PUBLISHED, sent.value)
    assert [s.topic for s in inputs] == ["reports.deltas", "diagnostics.facts"]
    assert inputs[0].value["version"] == sent.value["version"]


def test_a_reattribution_stamp_outranks_the_state_it_was_recomputed_from() -> None:
    user, [first] = assign(User())
    _, sends = rules.on_engagement(user, eng("c", T_MS - 10), ctx(NOW_MS + 1_000))
    assert results(sends)[0]["order"] == [first["order"][0], NOW_MS + 1_000]


def test_the_lane_user_stays_the_same_when_the_pseudonym_keys_rotate() -> None:
    """The protected lane bounds a user's contribution: a rotation must not make two."""
    user = with_engagements(eng("c", T_MS - 10))
    _, before = assign(user)
    rotated = (("k2", "another-secret-of-at-least-thirty-two-bytes"), *KEYS)
    c = rules.Context("u1", rotated, windows_of, NOW_MS, "i" * 32)
    _, sends = rules.on_assign(user, assignment(), c, 2 * T_MS)
    [after] = results(sends)
    assert before[0]["match"]["user"] != after["match"]["user"]
    assert before[0]["lane_user"] == after["lane_user"] == lane_user("1", "u1", "i" * 32)


def test_a_result_without_a_user_has_no_lane_user() -> None:
    user, _ = assign(User())
    _, sends = rules.on_privacy_request(user, {"kind": "opt_out", "ts_ms": 10}, 0, ctx())
    [result] = results(sends)
    assert result["match"] is None and result["lane_user"] is None


def test_an_assignment_recomputed_after_a_crash_outranks_its_first_result() -> None:
    """Before the crash: assigned, then unattributed. After it, from state without the
    assignment, the engagement comes first: the attributed result must rank higher."""
    _, [unattributed] = assign(User())
    after, _ = rules.on_engagement(User(), eng("c", T_MS - 10), ctx(NOW_MS + 5_000))
    _, [attributed] = assign(after, now_ms=NOW_MS + 5_000)
    assert unattributed["status"] == "unattributed" and attributed["status"] == "attributed"
    mv, seq = unattributed["order"]
    assert rules.is_newer(attributed["order"], Published((mv, seq), {}))


def test_the_same_user_has_another_pseudonym_in_another_ad_account() -> None:
    other = assignment("k2")
    other["conv"] = {**other["conv"], "ad_account_id": "2"}
    user, [in_1] = assign(User())
    _, [in_2] = assign(user, other)
    assert in_1["match"]["user"] == pseudonym("1", "u1", KEYS)
    assert in_2["match"]["user"] == pseudonym("2", "u1", KEYS) != in_1["match"]["user"]


def test_delete_scrubs_each_conversion_with_the_pseudonym_of_its_own_account() -> None:
    other = assignment("2:lead:e:online")
    other["conv"] = {**other["conv"], "ad_account_id": "2"}
    user, _ = assign(User(), other, expires_ms=5)
    user = rules.trim(user, now_ms=10)  # gone from convs: the account comes from the key
    _, [scrub, _forget, *_] = rules.on_delete(user, DELETE, ctx())
    assert pseudonym("2", "u1", KEYS) in scrub.value["users"]
    assert pseudonym("1", "u1", KEYS) not in scrub.value["users"]


def test_delete_records_the_deleted_user_and_a_receipt() -> None:
    user, _ = assign(User(), assignment("k1"))
    _, sends = rules.on_delete(user, DELETE, ctx())
    [deleted] = [s for s in sends if s.topic == "privacy.deleted"]
    [receipt] = [s for s in sends if s.topic == "privacy.receipts"]
    global_user = pseudonym(DELETED_USERS_SCOPE, "u1", KEYS)
    assert deleted.key == global_user
    assert deleted.value == {"user": global_user, "deleted_at_ms": NOW_MS, "request_id": "r-1"}
    assert receipt.key == "r-1"
    assert receipt.value == {
        "request_id": "r-1",
        "service": "attribute",
        "completed_at_ms": NOW_MS,
        "conversions_scrubbed": 1,
    }


def test_deleted_up_to_the_later_of_the_request_and_now() -> None:
    later = {**DELETE, "ts_ms": NOW_MS + 5}
    _, sends = rules.on_delete(User(), later, ctx())
    assert [s.value["deleted_at_ms"] for s in sends if s.topic == "privacy.deleted"] == [NOW_MS + 5]


def test_delete_without_a_request_id_still_deletes_without_a_receipt() -> None:
    request = {k: v for k, v in DELETE.items() if k != "request_id"}
    _, sends = rules.on_delete(User(), request, ctx())
    assert [s.topic for s in sends] == ["privacy.deleted"]
    assert rules.parse_deleted(orjson.dumps(sends[0].value)) == NOW_MS


@given(st.integers(0, 2 * T_MS), st.integers(0, 2 * T_MS))
def test_only_inputs_at_or_before_the_deletion_are_dropped(at_ms: int, deleted_at: int) -> None:
    assert rules.predates_deletion(at_ms, deleted_at) == (at_ms <= deleted_at)
    assert not rules.predates_deletion(at_ms, None)
    assert not rules.predates_deletion(None, deleted_at)


def test_the_time_of_an_input_is_its_ts_or_its_conversion_event_time() -> None:
    assert rules.input_time_ms("ads.engagements", eng("c", 7)) == 7
    assert rules.input_time_ms("privacy.requests", DELETE) == T_MS
    assert rules.input_time_ms("attribution.assignments", assignment()) == T_MS
    retract = {"op": "retract", "conversion_key": "k", "mv": 2}
    assert rules.input_time_ms("attribution.assignments", retract) is None


def test_an_input_is_forwarded_by_internal_user_id_with_its_position_and_no_click_id() -> None:
    engagement = {**eng("e1", T_MS, "click"), "user_id": "raw-user-1", "click_id": "clk-1"}
    send = rules.forward_user_event("ads.engagements", engagement, (3, 41), "k" * 32)
    internal = internal_user("raw-user-1", "k" * 32)
    assert (send.topic, send.key) == ("attribution.user_events", internal)
    assert send.value["arrival"] == [3, 41] and send.value["event"]["user_id"] == internal
    assert "raw-user-1" not in str(send.value) and "clk-1" not in str(send.value)


# ------------------------------------------------------------- part tables

user_inputs = st.lists(
    st.one_of(
        st.tuples(st.just("engagement"), st.integers(0, 200), st.sampled_from(["click", "view"])),
        st.tuples(st.just("assign"), st.integers(0, 3), st.integers(1, 3)),
        st.tuples(st.just("retract"), st.integers(0, 3), st.integers(1, 4)),
        st.tuples(st.just("privacy"), st.integers(0, 5), st.sampled_from(["opt_out", "opt_in"])),
    ),
    max_size=25,
)


def user_step(
    user: User, step: tuple[str, int, Any], i: int, c: rules.Context
) -> tuple[str, dict[str, Any], User, list[Send]]:
    kind, a, b = step
    if kind == "engagement":
        payload = eng(f"e{i}", T_MS - a * DAY_MS // 4, kind=b)
        return ("ads.engagements", payload, *rules.on_engagement(user, payload, c))
    if kind == "privacy":
        payload = {"kind": b, "ts_ms": T_MS + a}
        return ("privacy.requests", payload, *rules.on_privacy_request(user, payload, i, c))
    payload = {**assignment(f"k{a}", mv=b), "op": kind}
    if kind == "assign":
        return (
            "attribution.assignments",
            payload,
            *rules.on_assign(user, payload, c, c.now_ms + 7 * DAY_MS),
        )
    return ("attribution.assignments", payload, *rules.on_retract(user, payload))


@given(user_inputs)
def test_a_user_in_part_tables_gets_the_results_one_whole_value_would(
    steps: list[tuple[str, int, Any]],
) -> None:
    """The users agent's split (engagements, conversions and names one key each; an
    input reading only the name it needs) sends the results, and ends with the state,
    of the whole user in one value: over re-attribution, retraction, expiry and trimming."""
    from services.attribute import state

    whole = User()
    value: Any = None
    tables: dict[str, dict[str, Any]] = {kind: {} for kind in state.PART_KINDS}
    sent_whole: list[Any] = []
    sent_split: list[Any] = []
    for i, step in enumerate(steps):
        c = ctx(now_ms=NOW_MS + i * 20 * DAY_MS)  # conversions expire, engagements are trimmed
        _, _, new_whole, sends = user_step(whole, step, i, c)
        whole = rules.trim(new_whole, c.now_ms)
        sent_whole += [(s.key, s.value) for s in sends]

        name = f"k{step[1]}" if step[0] in ("assign", "retract") else None
        stored = state.UserParts(
            engagements=dict(tables["engagements"]),
            convs=dict(tables["convs"]),
            named=frozenset({name} & set(tables["named"])) if name else frozenset(),
        )
        user = state.decode_user(value, stored)
        kind, payload, new, sends = user_step(user, step, i, c)
        sent_split += [(s.key, s.value) for s in sends]
        concerned = rules.concerned_parts(user, kind, payload, c)
        trimmed = rules.trim(new, c.now_ms)
        decode = {
            "named": lambda v: v,
            "convs": state.decode_assigned,
            "engagements": state.decode_engagement,
        }
        for table, writes in state.part_writes(stored, trimmed, concerned).items():
            tables[table].update({k: decode[table](v) for k, v in writes.puts.items()})
            for k in writes.deletes:
                del tables[table][k]
        value = state.encode_user(trimmed)
    by_key = lambda sent: sorted(sent, key=lambda s: str(s[0]))  # noqa: E731 (stable sort)
    assert by_key(sent_split) == by_key(sent_whole)
    everything = state.UserParts(tables["engagements"], tables["convs"], frozenset(tables["named"]))
    final = state.decode_user(value, everything)
    assert (final.engagements, final.convs, final.privacy) == (
        whole.engagements,
        whole.convs,
        whole.privacy,
    )
    assert set(final.named) == set(whole.named)
