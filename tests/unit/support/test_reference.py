"""The reference model, rule by rule, on small hand-built inputs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.workload import Record, generate, iter_values
from shared.contract.identifiers import (
    hash_email,
    hash_external_id,
    hash_maid,
    hash_phone,
)
from shared.contract.keys import internal_user, ip_ua_hash
from shared.contract.pseudonyms import pseudonym
from shared.runtime.settings import Settings
from tests.support.reference import Expected, comparable_row, fold, reference

NOW = 1_764_151_200_000  # 2025-11-26T10:00:00Z
T = 1_764_100_000  # a conversion's event_time (s): 2025-11-25T19:46:40Z
T_MS = T * 1000
DAY_S = 86_400
DAY_MS = DAY_S * 1000
A1, A2 = "549755885175", "549755000002"
KEYS = Settings(dev_mode=True).active_pseudonym_keys
ID_KEY = Settings(dev_mode=True).active_identifier_key
EM1, EM2, EM3 = (hash_email(f"user{i}@example.com") for i in (1, 2, 3))
PH1 = hash_phone("+1 415 555 0101")
MAID1 = hash_maid("6d92078a-8246-4ba4-ae5b-76104861e7dc")
EXT1 = hash_external_id("100001")
IP, UA = "203.0.113.7", "Mozilla/5.0 (X11; Linux x86_64)"
IPUA = ip_ua_hash(IP, UA)


def p(user_id: str, acct: str = A1) -> str:
    """The pseudonym of ``user_id`` in ad account ``acct`` (of its internal id)."""
    return pseudonym(acct, internal_user(user_id, ID_KEY), KEYS)


def conv(
    event_id: str = "ev-1",
    t: int = T,
    *,
    name: str = "checkout",
    action_source: str = "web",
    source: str = "api",
    acct: str = A1,
    received: int | None = None,
    value: str | None = "10.00",
    currency: str | None = "USD",
    opt_out: bool | None = None,
    opt_out_type: str | None = None,
    **user_data: Any,
) -> Record:
    ud = {k: v for k, v in user_data.items() if v is not None}
    if not ud:
        ud = {"em": [hash_email("nobody@example.net")]}
    custom: dict[str, Any] = {}
    if value is not None:
        custom["value"] = value
    if currency is not None:
        custom["currency"] = currency
    if opt_out_type is not None:
        custom["opt_out_type"] = opt_out_type
    event: dict[str, Any] = {
        "event_name": name,
        "action_source": action_source,
        "event_time": t,
        "event_id": event_id,
        "user_data": ud,
        "custom_data": custom,
    }
    if opt_out is not None:
        event["opt_out"] = opt_out
    env = {
        "ad_account_id": acct,
        "source": source,
        "received_at_ms": received if received is not None else t * 1000 + 5_000,
        "event": event,
    }
    return Record("conversions.raw", acct.encode(), orjson.dumps(env))


def sig(
    user: str, key_type: str, key: str, ts: int, op: str = "link", acct: str | None = None
) -> Record:
    return Record(
        "identity.signals",
        key.encode(),
        orjson.dumps(
            {
                "user_id": user,
                "key_type": key_type,
                "key": key,
                "ad_account_id": acct,
                "op": op,
                "ts_ms": ts,
            }
        ),
    )


def eng(
    eid: str,
    user: str,
    kind: str,
    ts: int,
    *,
    acct: str = A1,
    ad: str = "a-1",
    click_id: str | None = None,
) -> Record:
    if kind == "click" and click_id is None:
        click_id = f"epik-{eid}"
    return Record(
        "ads.engagements",
        user.encode(),
        orjson.dumps(
            {
                "engagement_id": eid,
                "user_id": user,
                "ad_account_id": acct,
                "campaign_id": "c-1",
                "ad_group_id": "g-1",
                "ad_id": ad,
                "type": kind,
                "ts_ms": ts,
                "click_id": click_id,
            }
        ),
    )


def priv(user: str, kind: str, ts: int, rid: str = "r-1") -> Record:
    return Record(
        "privacy.requests",
        user.encode(),
        orjson.dumps({"request_id": rid, "user_id": user, "kind": kind, "ts_ms": ts}),
    )


def run(*records: Record, **kwargs: Any) -> Expected:
    return reference(list(records), now_ms=NOW, **kwargs)


def only(expected: Expected) -> dict[str, Any]:
    assert len(expected.attributed) == 1, expected.attributed
    return next(iter(expected.attributed.values()))


def outcomes(expected: Expected) -> list[str]:
    return [o.outcome for o in expected.outcomes]


# ------------------------------------------------------------------ dedup


@pytest.mark.parametrize(
    "dt, second",
    [
        (2 * DAY_S, "duplicate"),
        (2 * DAY_S + 1, "accepted"),
        (-2 * DAY_S, "duplicate"),
        (-2 * DAY_S - 1, "accepted"),
        (0, "duplicate"),
    ],
)
def test_dedup_window_edge_is_inclusive(dt: int, second: str) -> None:
    e = run(conv("ev-1", T - 3 * DAY_S), conv("ev-1", T - 3 * DAY_S + dt, source="tag"))
    assert outcomes(e) == ["accepted", second]
    assert e.counts["api"]["accepted"] == 1
    assert e.counts["tag"] == {
        "received": 1,
        "accepted": int(second == "accepted"),
        "duplicates": int(second == "duplicate"),
        "rejected": 0,
    }
    assert len(e.attributed) == 1  # one conversion_key either way
    assert only(e)["event_time"] == (T - 3 * DAY_S + dt if second == "accepted" else T - 3 * DAY_S)
    assert only(e)["source"] == ("tag" if second == "accepted" else "api")


def test_custom_dedup_window() -> None:
    e = run(conv("ev-1", T - 100), conv("ev-1", T), dedup_window_s=99)
    assert outcomes(e) == ["accepted", "accepted"]


def test_offline_and_online_are_separate_keys() -> None:
    e = run(
        conv("ev-1", action_source="web"),
        conv("ev-1", action_source="offline", source="batch"),
        conv("ev-1", action_source="app_ios"),
    )
    assert outcomes(e) == ["accepted", "accepted", "duplicate"]
    assert set(e.attributed) == {f"{A1}:checkout:ev-1:online", f"{A1}:checkout:ev-1:offline"}


def test_key_includes_event_name_and_ad_account() -> None:
    e = run(conv("ev-1"), conv("ev-1", name="lead"), conv("ev-1", acct=A2))
    assert outcomes(e) == ["accepted"] * 3
    assert len(e.attributed) == 3


def test_first_accepted_wins() -> None:
    e = run(conv("ev-1", T - 100, value="10.00"), conv("ev-1", T, value="99.00", source="tag"))
    assert only(e)["value"] == 10.0 and only(e)["event_time"] == T - 100
    # an invalid first event does not count: the valid second is the first accepted
    e = run(conv("ev-1", T - 100, value="abc"), conv("ev-1", T, value="99.00"))
    assert outcomes(e) == ["rejected", "accepted"]
    assert only(e)["value"] == 99.0


def test_supersede_outside_window_and_later_resends_compare_with_every_accepted() -> None:
    t0 = T - 5 * DAY_S
    e = run(
        conv("ev-1", t0, value="1.00"),
        conv("ev-1", t0 + 3 * DAY_S, value="2.00"),  # outside: supersedes
        conv("ev-1", t0 + DAY_S, value="3.00"),  # within both
        conv("ev-1", t0 - 2 * DAY_S - 1, value="4.00"),  # outside both: supersedes
        conv("ev-1", t0 + 5 * DAY_S - 1, value="5.00"),
    )  # within of the 2nd only
    assert outcomes(e) == ["accepted", "accepted", "duplicate", "accepted", "duplicate"]
    assert only(e)["value"] == 4.0 and only(e)["event_time"] == t0 - 2 * DAY_S - 1
    assert e.accepted == 3
    # the report counts the key once, with its latest result
    assert sum(r["conversions"] for r in e.reports.values()) == 1


def test_order_is_arrival_order_not_event_time() -> None:
    e = run(conv("ev-1", T, value="1.00"), conv("ev-1", T - 100, value="2.00"))
    assert outcomes(e) == ["accepted", "duplicate"] and only(e)["value"] == 1.0


# --------------------------------------------------------------- validation


def test_validation_limits_and_counts_per_source() -> None:
    hour_ms = 3_600_000
    recs = [
        conv("ok-future", T, received=T_MS - hour_ms),  # exactly 1 h: valid
        conv("bad-future", T, received=T_MS - hour_ms - 1000),  # 1 s more: invalid
        conv("ok-old", T, received=T_MS + 67 * DAY_MS),
        conv("bad-old", T, received=T_MS + 67 * DAY_MS + 1),
        conv("bad-ms", T * 1000),
        conv("bad-cur", currency="US", source="tag"),
        conv("bad-val", value="12,50", source="batch"),
        conv("bad-val2", value="NaN", source="batch"),
        conv("plain", em=["jane@example.com"]),
        conv("noid", ph=[PH1], em=None),
        Record("conversions.raw", None, b"{nope"),
        Record("conversions.raw", None, b"[1]"),
    ]
    e = run(*recs)
    assert outcomes(e) == ["accepted", "rejected", "accepted"] + ["rejected"] * 9
    assert [o.reason for o in e.outcomes if o.outcome == "rejected"] == [
        "event_time_in_future",
        "event_time_too_old",
        "event_time_in_milliseconds",
        "invalid_currency",
        "invalid_value",
        "invalid_value",
        "unhashed_identifier",
        "missing_user_identifiers",
        "invalid_json",
        "not_an_object",
    ]
    assert e.counts == {
        "api": {"received": 7, "accepted": 2, "duplicates": 0, "rejected": 5},
        "tag": {"received": 1, "accepted": 0, "duplicates": 0, "rejected": 1},
        "batch": {"received": 2, "accepted": 0, "duplicates": 0, "rejected": 2},
        "topic": {"received": 2, "accepted": 0, "duplicates": 0, "rejected": 2},
    }


def test_unknown_fields_and_missing_required_fields_are_rejected() -> None:
    good = orjson.loads(conv("x").value)
    cases = []
    for mutate in (
        lambda env: env["event"].__setitem__("user_id", "u-1"),
        lambda env: env["event"]["custom_data"].__setitem__("price", "1"),
        lambda env: env["event"].pop("event_id"),
        lambda env: env["event"].__setitem__("event_name", "purchase"),
        lambda env: env["event"].__setitem__("action_source", "email"),
    ):
        env = orjson.loads(orjson.dumps(good))
        mutate(env)
        cases.append(Record("conversions.raw", A1.encode(), orjson.dumps(env)))
    e = run(*cases)
    assert [o.reason for o in e.outcomes] == [
        "unknown_field",
        "unknown_field",
        "missing_required_field",
        "invalid_event_name",
        "invalid_action_source",
    ]
    assert e.attributed == {} and e.reports == {}


def test_an_unknown_user_data_field_is_ignored() -> None:
    env = orjson.loads(conv("x").value)
    env["event"]["user_data"]["full_name"] = "Alice Smith"
    e = run(Record("conversions.raw", A1.encode(), orjson.dumps(env)))
    assert [o.reason for o in e.outcomes] == [None]


def test_missing_source_counts_as_topic() -> None:
    env = orjson.loads(conv("x").value)
    del env["source"]
    e = run(Record("conversions.raw", A1.encode(), orjson.dumps(env)))
    assert e.counts == {"topic": {"received": 1, "accepted": 1, "duplicates": 0, "rejected": 0}}
    assert only(e)["source"] == "topic"


def test_envelope_rules() -> None:
    good = orjson.loads(conv("x").value)

    def rec(key: bytes | None = A1.encode(), **changes: Any) -> Record:
        env = {**good, **changes}
        for name, v in changes.items():
            if v is _DROP:
                del env[name]
        return Record("conversions.raw", key, orjson.dumps(env))

    e = run(
        rec(key=A2.encode()),
        rec(key=None),
        rec(recieved_at_ms=1),
        rec(source="web"),
        rec(ad_account_id="act_1"),
        rec(event=None),
        rec(event=_DROP),
        rec(received_at_ms=-1),
        rec(source=None),
        rec(received_at_ms=_DROP),
        Record("conversions.raw", A1.encode(), None),
    )
    assert [o.reason for o in e.outcomes] == [
        "key_mismatch",
        "key_mismatch",
        "unknown_envelope_field",
        "invalid_source",
        "invalid_ad_account_id",
        "missing_event",
        "missing_event",
        "invalid_received_at_ms",
        None,
        None,
        "empty_record",
    ]
    # source null means topic; received_at_ms missing means now_ms (NOW: valid here)
    assert outcomes(e)[-3:-1] == ["accepted", "duplicate"]
    assert e.counts["topic"] == {"received": 3, "accepted": 1, "duplicates": 0, "rejected": 2}
    e = run(rec(source="web"), Record("conversions.raw", None, b"{"), unreadable_source="unknown")
    assert e.counts == {"unknown": {"received": 2, "accepted": 0, "duplicates": 0, "rejected": 2}}
    assert outcomes(run(rec(key=A2.encode()), check_key=False)) == ["accepted"]


_DROP = object()


# ----------------------------------------------------------------- matching


def _all_ids(**drop: bool) -> dict[str, Any]:
    ids = {
        "click_id": "epik-click",
        "external_id": [EXT1],
        "em": [EM1],
        "ph": [PH1],
        "hashed_maids": [MAID1],
        "client_ip_address": IP,
        "client_user_agent": UA,
    }
    for name in drop:
        ids.pop(name)
    if "client_ip_address" not in ids:
        ids.pop("client_user_agent", None)
    return ids


_CONTEXT = [
    eng("e-1", "u-click", "click", T_MS - DAY_MS, click_id="epik-click"),
    sig("u-ext", "external_id", EXT1, T_MS - 10 * DAY_MS, acct=A1),
    sig("u-em", "em", EM1, T_MS - 10 * DAY_MS),
    sig("u-ph", "ph", PH1, T_MS - 10 * DAY_MS),
    sig("u-maid", "hashed_maid", MAID1, T_MS - 10 * DAY_MS),
    sig("u-ipua", "ip_ua", IPUA, T_MS - DAY_MS),
]


@pytest.mark.parametrize(
    "dropped, key_type, user",
    [
        ((), "click_id", "u-click"),
        (("click_id",), "external_id", "u-ext"),
        (("click_id", "external_id"), "em", "u-em"),
        (("click_id", "external_id", "em"), "ph", "u-ph"),
        (("click_id", "external_id", "em", "ph"), "hashed_maid", "u-maid"),
        (("click_id", "external_id", "em", "ph", "hashed_maids"), "ip_ua", "u-ipua"),
    ],
)
def test_match_priority(dropped: tuple[str, ...], key_type: str, user: str) -> None:
    ids = _all_ids(**dict.fromkeys(dropped, True))
    if not (ids.get("em") or ids.get("hashed_maids") or ids.get("client_ip_address")):
        ids["em"] = [EM3]  # keeps the event valid; EM3 links nobody
    r = only(run(*_CONTEXT, conv(**ids)))
    assert r["match"] == {"key_type": key_type, "user": p(user)}
    assert r["status"] == "unattributed" if user != "u-click" else "attributed"


def test_maid_key_type_name_is_a_parameter() -> None:
    ids = _all_ids(click_id=True, external_id=True, em=True, ph=True)
    r = only(run(*_CONTEXT, conv(**ids), maid_key_type="hashed_maids"))
    assert r["match"]["key_type"] == "hashed_maids"


def test_values_are_tried_in_array_order() -> None:
    ctx = [sig("u-2", "em", EM2, T_MS - DAY_MS), sig("u-3", "em", EM3, T_MS - DAY_MS)]
    assert only(run(*ctx, conv(em=[EM1, EM3, EM2])))["match"]["user"] == p("u-3")
    assert only(run(*ctx, conv(em=[EM1, EM2, EM3])))["match"]["user"] == p("u-2")


def test_click_id_counts_only_clicks_at_or_before_event_time() -> None:
    ctx = [sig("u-em", "em", EM1, T_MS - DAY_MS)]
    at = eng("e-1", "u-c", "click", T_MS, click_id="epik-x")
    after = eng("e-1", "u-c", "click", T_MS + 1, click_id="epik-x")
    assert only(run(*ctx, at, conv(click_id="epik-x", em=[EM1])))["match"]["user"] == p("u-c")
    r = only(run(*ctx, after, conv(click_id="epik-x", em=[EM1])))
    assert r["match"] == {"key_type": "em", "user": p("u-em")}
    r = only(run(after, conv(click_id="epik-x", em=[EM1])))
    assert (r["status"], r["unidentified_reason"]) == ("unidentified", "no_match")


def test_the_same_user_has_another_pseudonym_in_another_ad_account() -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS)]
    in_a1 = only(run(*ctx, conv(em=[EM1])))["match"]["user"]
    in_a2 = only(run(*ctx, conv(em=[EM1], acct=A2)))["match"]["user"]
    assert in_a1 == p("u-1", A1) and in_a2 == p("u-1", A2) and in_a1 != in_a2


def test_external_id_of_another_ad_account_is_ignored() -> None:
    ctx = [
        sig("u-other", "external_id", EXT1, T_MS - DAY_MS, acct=A2),
        sig("u-em", "em", EM1, T_MS - DAY_MS),
    ]
    r = only(run(*ctx, conv(external_id=[EXT1], em=[EM1])))
    assert r["match"] == {"key_type": "em", "user": p("u-em")}
    r = only(run(*ctx, conv(external_id=[EXT1], em=[EM1], acct=A2)))
    assert r["match"] == {"key_type": "external_id", "user": p("u-other", A2)}
    # an unlink in another account does not clear this account's link
    ctx2 = [
        sig("u-1", "external_id", EXT1, T_MS - 2 * DAY_MS, acct=A1),
        sig("u-1", "external_id", EXT1, T_MS - DAY_MS, op="unlink", acct=A2),
    ]
    assert only(run(*ctx2, conv(external_id=[EXT1], em=[EM3])))["match"]["user"] == p("u-1")


@pytest.mark.parametrize(
    "t, user",
    [
        (T - 3 * DAY_S - 1, None),  # before the first link
        (T - 3 * DAY_S, "u-1"),  # the link at exactly T counts
        (T - 2 * DAY_S - 1, "u-1"),
        (T - 2 * DAY_S, None),  # unlinked
        (T - DAY_S, "u-2"),  # re-linked to another user
        (T, "u-2"),
    ],
)
def test_link_unlink_relink_fold_as_of_event_time(t: int, user: str | None) -> None:
    ctx = [
        sig("u-2", "em", EM1, (T - DAY_S) * 1000),  # arrives first, folds last
        sig("u-1", "em", EM1, (T - 3 * DAY_S) * 1000),
        sig("u-1", "em", EM1, (T - 2 * DAY_S) * 1000, op="unlink"),
    ]
    r = only(run(*ctx, conv(t=t, em=[EM1])))
    assert (r["match"] or {}).get("user") == (p(user) if user else None)
    if user is None:
        assert r["unidentified_reason"] == "no_match"


@pytest.mark.parametrize(
    "ops, user",
    [
        ([("u-1", "unlink"), ("u-2", "link")], "u-2"),
        ([("u-2", "link"), ("u-1", "unlink")], "u-2"),  # unlink of another user: no-op
        ([("u-2", "link"), ("u-2", "unlink")], None),
        ([("u-2", "unlink"), ("u-2", "link")], "u-2"),
    ],
)
def test_equal_ts_folds_in_arrival_order(ops: list[tuple[str, str]], user: str | None) -> None:
    ts = T_MS - DAY_MS
    ctx = [sig("u-1", "em", EM1, ts - DAY_MS)] + [sig(u, "em", EM1, ts, op=o) for u, o in ops]
    r = only(run(*ctx, conv(em=[EM1])))
    assert (r["match"] or {}).get("user") == (p(user) if user else None)


def test_link_after_the_conversion_does_not_claim_it() -> None:
    r = only(run(sig("u-1", "em", EM1, T_MS + 1), conv(em=[EM1])))
    assert (r["status"], r["unidentified_reason"], r["match"]) == ("unidentified", "no_match", None)
    # ... nor does a re-link after it move it
    r = only(run(sig("u-1", "em", EM1, T_MS - 1), sig("u-2", "em", EM1, T_MS + 1), conv(em=[EM1])))
    assert r["match"]["user"] == p("u-1")


@pytest.mark.parametrize(
    "age_ms, matched", [(0, True), (7 * DAY_MS, True), (7 * DAY_MS + 1, False), (-1, False)]
)
def test_ip_ua_validity_is_seven_days_inclusive(age_ms: int, matched: bool) -> None:
    r = only(
        run(
            sig("u-1", "ip_ua", IPUA, T_MS - age_ms),
            conv(client_ip_address=IP, client_user_agent=UA),
        )
    )
    assert (r["match"] is not None) == matched
    assert r["status"] == ("unattributed" if matched else "unidentified")


def test_ip_ua_validity_counts_from_the_latest_link() -> None:
    ctx = [
        sig("u-1", "ip_ua", IPUA, T_MS - 20 * DAY_MS),
        sig("u-1", "ip_ua", IPUA, T_MS - 2 * DAY_MS),
    ]
    assert only(run(*ctx, conv(client_ip_address=IP, client_user_agent=UA)))["match"]
    # without the user agent there is no ip_ua identifier at all
    r = only(run(*ctx, conv(client_ip_address=IP, em=[EM3])))
    assert r["unidentified_reason"] == "no_match"


# --------------------------------------------------------------- restricted


def test_restricted_events_are_never_tied_to_a_user() -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS), eng("e-1", "u-1", "click", T_MS - 1)]
    cases = {
        "opt_out": conv(em=[EM1], opt_out=True),
        "ldp": conv("ev-2", em=[EM1], opt_out_type="CCPA, LDP"),
        "both": conv("ev-3", em=[EM1], opt_out=True, opt_out_type="LDP"),
    }
    e = run(*ctx, *cases.values())
    reasons = {r["event_id"]: r["unidentified_reason"] for r in e.attributed.values()}
    assert reasons == {"ev-1": "opt_out", "ev-2": "ldp", "ev-3": "opt_out"}
    for r in e.attributed.values():
        assert (r["status"], r["match"], r["touch"]) == ("unidentified", None, None)
    assert only(run(*ctx, conv(em=[EM1], opt_out=False, opt_out_type="CCPA")))["status"] == (
        "attributed"
    )


@pytest.mark.parametrize(
    "requests, restricted",
    [
        ([("opt_out", 1)], True),
        ([("opt_out", 1), ("opt_in", 2)], False),
        ([("opt_in", 2), ("opt_out", 1)], False),  # latest by ts_ms, not by arrival
        ([("opt_in", 1), ("opt_out", 2)], True),
        ([("opt_in", 1)], False),
    ],
)
def test_user_opt_out_by_latest_privacy_request(
    requests: list[tuple[str, int]], restricted: bool
) -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS), eng("e-1", "u-1", "view", T_MS - 1)]
    reqs = [priv("u-1", kind, T_MS - 10 * DAY_MS + ts, f"r-{ts}") for kind, ts in requests]
    r = only(run(*ctx, *reqs, conv(em=[EM1])))
    if restricted:
        assert (r["status"], r["unidentified_reason"], r["match"], r["touch"]) == (
            "unidentified",
            "user_opt_out",
            None,
            None,
        )
    else:
        assert r["status"] == "attributed" and r["match"]["user"] == p("u-1")


def test_user_opt_out_after_the_event_counts_unless_asked_otherwise() -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS), priv("u-1", "opt_out", T_MS + DAY_MS)]
    assert only(run(*ctx, conv(em=[EM1])))["unidentified_reason"] == "user_opt_out"
    r = only(run(*ctx, conv(em=[EM1]), privacy_as_of_event_time=True))
    assert r["status"] == "unattributed"


def test_opt_out_of_another_user_does_not_restrict() -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS), priv("u-2", "opt_out", T_MS - DAY_MS)]
    assert only(run(*ctx, conv(em=[EM1])))["status"] == "unattributed"


def test_delete_requests_are_not_modelled() -> None:
    with pytest.raises(ValueError):
        run(priv("u-1", "delete", T_MS), conv())


# -------------------------------------------------------------- attribution


def _touch(*engagements: Record, **kwargs: Any) -> dict[str, Any] | None:
    r = only(run(sig("u-1", "em", EM1, T_MS - 60 * DAY_MS), *engagements, conv(em=[EM1]), **kwargs))
    assert r["status"] == ("attributed" if r["touch"] else "unattributed")
    return r["touch"]


def test_class_priority_beats_recency() -> None:
    touch = _touch(
        eng("e-1", "u-1", "click", T_MS - 29 * DAY_MS),
        eng("e-2", "u-1", "engagement", T_MS - DAY_MS),
        eng("e-3", "u-1", "view", T_MS - 1),
    )
    assert touch is not None and touch["engagement_id"] == "e-1"
    assert touch == {
        "engagement_id": "e-1",
        "campaign_id": "c-1",
        "ad_group_id": "g-1",
        "ad_id": "a-1",
        "type": "click",
        "ts_ms": T_MS - 29 * DAY_MS,
    }
    touch = _touch(
        eng("e-2", "u-1", "engagement", T_MS - 20 * DAY_MS), eng("e-3", "u-1", "view", T_MS - 1)
    )
    assert touch is not None and touch["type"] == "engagement"


@pytest.mark.parametrize(
    "kind, age_ms, inside",
    [
        ("click", 30 * DAY_MS, True),
        ("click", 30 * DAY_MS + 1, False),
        ("engagement", 30 * DAY_MS, True),
        ("engagement", 30 * DAY_MS + 1, False),
        ("view", DAY_MS, True),
        ("view", DAY_MS + 1, False),
        ("click", 0, True),
        ("view", -1, False),
    ],
)
def test_window_edges_are_inclusive(kind: str, age_ms: int, inside: bool) -> None:
    touch = _touch(eng("e-1", "u-1", kind, T_MS - age_ms))
    assert (touch is not None) == inside


def test_ad_account_windows() -> None:
    e1 = eng("e-1", "u-1", "click", T_MS - 10 * DAY_MS)
    e2 = eng("e-2", "u-1", "view", T_MS - 2 * DAY_MS)
    assert _touch(e1, e2, windows={A1: {"click": 7, "view": 7}})["engagement_id"] == "e-2"
    assert _touch(e1, e2, windows={A1: {"click": 0, "view": 0}}) is None
    assert _touch(e1, e2, windows={A2: {"click": 0}})["engagement_id"] == "e-1"
    assert _touch(eng("e-3", "u-1", "view", T_MS), windows={A1: {"view": 0}}) is None


def test_tie_breaks_latest_ts_then_greatest_engagement_id() -> None:
    touch = _touch(eng("e-1", "u-1", "view", T_MS - 5000), eng("e-2", "u-1", "view", T_MS - 6000))
    assert touch is not None and touch["engagement_id"] == "e-1"
    touch = _touch(
        eng("e-7", "u-1", "click", T_MS - 5000),
        eng("e-8", "u-1", "click", T_MS - 5000),
        eng("e-6", "u-1", "click", T_MS - 5000),
    )
    assert touch is not None and touch["engagement_id"] == "e-8"


def test_only_the_same_ad_account_and_the_matched_user() -> None:
    assert (
        _touch(
            eng("e-1", "u-1", "click", T_MS - DAY_MS, acct=A2),
            eng("e-2", "u-9", "click", T_MS - DAY_MS),
        )
        is None
    )


def test_clicked_user_is_attributed_to_its_click() -> None:
    r = only(
        run(
            eng("e-5", "u-1", "click", T_MS - DAY_MS, click_id="epik-5"),
            eng("e-6", "u-1", "view", T_MS - 1000),
            conv(click_id="epik-5", em=[EM3]),
        )
    )
    assert r["status"] == "attributed" and r["touch"]["engagement_id"] == "e-5"
    assert r["match"] == {"key_type": "click_id", "user": p("u-1")}


# ------------------------------------------------------------------ outputs


def test_attributed_record_fields() -> None:
    r = only(
        run(
            sig("u-1", "em", EM1, T_MS - DAY_MS),
            conv("ev-9", em=[EM1], value="72.390", source="tag"),
        )
    )
    assert r == {
        "conversion_key": f"{A1}:checkout:ev-9:online",
        "ad_account_id": A1,
        "event_id": "ev-9",
        "event_name": "checkout",
        "action_source": "web",
        "source": "tag",
        "event_time": T,
        "value": 72.39,
        "currency": "USD",
        "status": "unattributed",
        "unidentified_reason": None,
        "match": {"key_type": "em", "user": p("u-1")},
        "touch": None,
    }
    assert only(run(conv(value=None, currency=None)))["value"] is None


def test_report_rows_sum_exactly_per_currency() -> None:
    ctx = [sig("u-1", "em", EM1, T_MS - DAY_MS), eng("e-1", "u-1", "click", T_MS - DAY_MS)]
    day0 = 1_764_028_800  # 2025-11-25T00:00:00Z
    e = run(
        *ctx,
        conv("a", em=[EM1], value="0.10"),
        conv("b", em=[EM1], value="0.20"),
        conv("c", em=[EM1], value="5", currency="EUR"),
        conv("d", em=[EM1], value=None, currency=None),
        conv("e", t=day0 - 1, em=[EM2], value="1.5"),  # previous UTC day, no match
        conv("f", t=day0, em=[EM2], value="2.25"),
        conv("g", t=day0 + 1, em=[EM2], opt_out=True, value="3"),
        conv("h", t=day0 + 2, em=[EM1], name="lead", value="7"),
    )
    rows = e.reports
    attributed = (A1, "c-1", "g-1", "a-1", "checkout", "click", "2025-11-25")
    assert rows[attributed] == {
        "conversions": 4,
        "value": {"USD": Decimal("0.30"), "EUR": Decimal(5)},
    }
    assert rows[(A1, None, None, None, "checkout", "unidentified", "2025-11-24")] == {
        "conversions": 1,
        "value": {"USD": Decimal("1.5")},
    }
    assert rows[(A1, None, None, None, "checkout", "unidentified", "2025-11-25")] == {
        "conversions": 2,
        "value": {"USD": Decimal("5.25")},
    }
    # the click e-1 (T - 1 day) precedes "h" (day0 + 2 s): attributed, a row of its own
    assert rows[(A1, "c-1", "g-1", "a-1", "lead", "click", "2025-11-25")] == {
        "conversions": 1,
        "value": {"USD": Decimal(7)},
    }
    assert len(rows) == 4
    assert sum(r["conversions"] for r in rows.values()) == len(e.attributed) == 8
    assert e.report_rows()[attributed] == (4, {"USD": 0.3, "EUR": 5.0})


def test_unattributed_rows_have_null_ids() -> None:
    e = run(sig("u-1", "em", EM1, T_MS - DAY_MS), conv(em=[EM1]))
    assert list(e.reports) == [(A1, None, None, None, "checkout", "unattributed", "2025-11-25")]


def test_diff_helpers_find_differences() -> None:
    e = run(
        sig("u-1", "em", EM1, T_MS - DAY_MS),
        eng("e-1", "u-1", "view", T_MS - 1),
        conv(em=[EM1], value="0.30"),
    )
    actual = {
        k: {**v, "version": 3_000_001, "processed_at_ms": 1, "value": 0.1 + 0.2}
        for k, v in e.attributed.items()
    }
    assert e.diff_attributed(actual) == []
    key = next(iter(actual))
    assert e.diff_attributed({key: {**actual[key], "status": "unattributed"}})
    assert e.diff_attributed({})
    assert e.diff_attributed({**actual, "x": {}})
    row = {
        "ad_account_id": A1,
        "campaign_id": "c-1",
        "ad_group_id": "g-1",
        "ad_id": "a-1",
        "event_name": "checkout",
        "attribution_type": "view",
        "date": "2025-11-25",
        "conversions": 1,
        "value": {"USD": 0.30000000000000004},
        "version": 9,
    }
    empty = {**row, "attribution_type": "click", "conversions": 0, "value": {"USD": 0.0}}
    assert e.diff_reports([row, empty]) == []
    assert e.diff_reports([{**row, "conversions": 2}])
    assert e.diff_reports([{**row, "value": {"USD": 0.31}}])
    assert e.diff_reports([])
    assert comparable_row(row)[1] == (1, {"USD": 0.3})


def test_fold_helper() -> None:
    history = [
        (1, 0, "link", "u-1", None),
        (2, 1, "unlink", "u-2", None),
        (3, 2, "unlink", "u-1", None),
    ]
    assert fold(history, 0) is None
    assert fold(history, 2) == ("u-1", 1)
    assert fold(history, 3) is None


# ------------------------------------------------------------- properties


_settings = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(seed=st.integers(0, 10_000), shuffle=st.integers(0, 10_000))
def test_result_does_not_depend_on_context_vs_conversion_order(seed: int, shuffle: int) -> None:
    w = generate(seed, 60, now_ms=NOW, users=25)
    a = reference(w.ordered("context_first"), now_ms=NOW)
    b = reference(w.ordered("conversions_first"), now_ms=NOW)
    c = reference(w.ordered("interleaved", shuffle), now_ms=NOW)
    assert a.attributed == b.attributed == c.attributed
    assert a.reports == b.reports == c.reports
    assert a.counts == b.counts == c.counts


@_settings
@given(seed=st.integers(0, 10_000))
def test_counts_and_rows_add_up(seed: int) -> None:
    w = generate(seed, 60, now_ms=NOW, users=25)
    e = reference(w.ordered("context_first"), now_ms=NOW)
    for row in e.counts.values():
        assert row["received"] == row["accepted"] + row["duplicates"] + row["rejected"]
    assert sum(r["received"] for r in e.counts.values()) == len(w.records["conversions.raw"])
    keys = {o.conversion_key for o in e.outcomes if o.outcome == "accepted"}
    assert set(e.attributed) == keys
    assert sum(r["conversions"] for r in e.reports.values()) == len(keys)
    total = sum((r["value"].get("USD", Decimal(0)) for r in e.reports.values()), Decimal(0))
    assert total == sum(
        (
            Decimal(str(r["value"]))
            for r in e.attributed.values()
            if r["currency"] == "USD" and r["value"] is not None
        ),
        Decimal(0),
    )
    assert e.counts == w.expected_counts_by_source()


@_settings
@given(
    seed=st.integers(0, 10_000),
    ts_after=st.integers(1, 10 * DAY_MS),
    key_type=st.sampled_from(["em", "ph", "hashed_maid", "ip_ua"]),
)
def test_signals_and_engagements_after_every_conversion_change_nothing(
    seed: int, ts_after: int, key_type: str
) -> None:
    w = generate(seed, 40, now_ms=NOW, users=20)
    base = reference(w.all_records(), now_ms=NOW)
    latest = max(r["event_time"] for r in base.attributed.values()) * 1000
    extra = []
    for r in base.attributed.values():
        for user in ("u-00000", "u-00001"):
            extra.append(
                eng(f"z-{user}", user, "click", latest + ts_after, acct=r["ad_account_id"])
            )
    for env in iter_values(w.records["conversions.raw"], "conversions.raw"):
        if isinstance(env, dict) and isinstance(env.get("event"), dict):
            ud = env["event"].get("user_data") or {}
            for h in ud.get("em", []) if isinstance(ud, dict) else []:
                extra.append(sig("u-00000", key_type, h, latest + ts_after))
                extra.append(sig("u-00000", "em", h, latest + ts_after))
    after = reference([*extra, *w.all_records()], now_ms=NOW)
    assert after.attributed == base.attributed
    # the same signals BEFORE the conversions do change something
    before = reference(
        [
            *[
                sig("u-00000", "em", orjson.loads(x.value)["key"], 0)
                for x in extra
                if x.topic == "identity.signals"
            ],
            *w.all_records(),
        ],
        now_ms=NOW,
    )
    if any(r["unidentified_reason"] == "no_match" for r in base.attributed.values()):
        assert before.attributed != base.attributed
