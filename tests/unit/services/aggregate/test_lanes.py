"""The privacy lanes' steps (services/aggregate/lanes.py), noise injected."""

from __future__ import annotations

import time
from typing import Any

from services.aggregate import lanes
from services.aggregate.noise import Thresholded
from services.aggregate.state import Bucket, PrivacyAccount, StratumTotals
from shared.contract.report_deltas import utc_date
from tests.support.members import apply

ACCOUNT = "1"
NOW_MS = int(time.time() * 1000)
T = NOW_MS // 1000 - 5 * 86_400
DATE = utc_date(T)
PARAMS = lanes.LaneParams(epsilon=1.0, budget=4.0, k=2, user_cap=1, value_cap=100.0, delay_s=0)


class ExactNoise:
    mechanism = "exact"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def thresholded_counts(self, counts, epsilon, user_cap, threshold) -> Thresholded:
        self.calls.append(("users", epsilon))
        return Thresholded({r: c for r, c in counts.items() if c >= threshold}, epsilon, 1e-9)

    def counts(self, values, epsilon, sensitivity):
        self.calls.append(("conversions", epsilon))
        return values

    def sums(self, values, epsilon, sensitivity):
        self.calls.append(("sums", epsilon))
        return [v + 0.001 for v in values]


def record(status: str = "attributed", user: str | None = "p1", version: int = 1) -> dict[str, Any]:
    return {
        "conversion_key": "k1",
        "ad_account_id": ACCOUNT,
        "event_name": "checkout",
        "action_source": "web",
        "event_time": T,
        "status": status,
        "match": {"key_type": "em", "user": user} if status != "unidentified" else None,
        "touch": {"campaign_id": "c1", "type": "click"} if status == "attributed" else None,
        "value": 10.0,
        "currency": "USD",
        "version": version,
    }


def stratum_of(*statuses: str) -> tuple[dict[str, Any], StratumTotals]:
    members: dict[str, Any] = {}
    totals = StratumTotals()
    for i, status in enumerate(statuses):
        delta = {"op": "add", "conversion_key": f"k{i}", "version": 1, "status": status}
        apply(members, totals, delta, NOW_MS, lanes.stratum_member)
    return members, totals


def test_modeled_record_counts_identified_and_unidentified():
    key = f"{ACCOUNT}:checkout:web:{DATE}"
    _, totals = stratum_of("attributed", "unattributed", "unidentified", "unidentified")
    doc = lanes.modeled_record(key, totals, k=2)
    assert (doc["identified"], doc["identified_attributed"], doc["unidentified"]) == (2, 1, 2)
    assert doc["modeled_attributed"] == 1.0 and doc["method"] == "wilson"
    assert doc["event_name"] == "checkout" and doc["date"] == DATE


def test_a_conversion_identified_later_moves_from_unidentified_to_identified():
    key = f"{ACCOUNT}:checkout:web:{DATE}"
    members, totals = stratum_of("unidentified")
    later = {"op": "add", "conversion_key": "k0", "version": 2, "status": "attributed"}
    assert apply(members, totals, later, NOW_MS, lanes.stratum_member)
    doc = lanes.modeled_record(key, totals, k=1)
    assert (doc["identified"], doc["identified_attributed"], doc["unidentified"]) == (1, 1, 0)


def test_an_emptied_stratum_is_a_tombstone():
    members, totals = stratum_of("attributed")
    remove = {"op": "remove", "conversion_key": "k0", "version": 2}
    assert apply(members, totals, remove, NOW_MS, lanes.stratum_member)
    assert lanes.modeled_record("1:e:web:2025-01-01", totals, k=1) is None


def add_delta(key: str, user: str, event_time: int, campaign: str = "c1", value: float = 10.0):
    return {
        "lane": "protected",
        "op": "add",
        "bucket": f"{ACCOUNT}:{DATE}",
        "conversion_key": key,
        "version": 1,
        "user": user,
        "event_time": event_time,
        "campaign_id": campaign,
        "event_name": "checkout",
        "attribution_type": "click",
        "value": value,
        "currency": "USD",
    }


def filled(*deltas: dict[str, Any]) -> tuple[PrivacyAccount, Bucket]:
    account, bucket = PrivacyAccount(), Bucket()
    for delta in deltas:
        lanes.on_bucket_delta(account, bucket, delta)
    return account, bucket


def request() -> dict[str, Any]:
    return {"op": "release", "ad_account_id": ACCOUNT, "dates": [DATE], "requested_at_ms": NOW_MS}


def run_release(account, bucket, params=PARAMS, noise=None):
    return lanes.release(
        account,
        ACCOUNT,
        {DATE: bucket},
        request(),
        params,
        noise or ExactNoise(),
        lambda: "rel-1",
        NOW_MS,
    )


def test_a_release_bounds_users_thresholds_rows_and_rounds_sums():
    account, bucket = filled(
        add_delta("a", "u1", T, "c1", 500.0),  # clipped to 100
        add_delta("b", "u1", T - 10, "c2"),  # u1's earliest: this one is kept, not "a"
        add_delta("c", "u2", T, "c1"),
        add_delta("d", "u3", T, "c1"),
    )
    outcome, sends = run_release(account, bucket)
    assert outcome.released == (DATE,)
    rows = account.released[DATE].rows
    # c1 has u2, u3 (u1's c1 conversion is beyond the cap); c2 has u1 only: under k=2.
    assert list(rows) == [f"{ACCOUNT}:c1:checkout:click:{DATE}"]
    row = rows[f"{ACCOUNT}:c1:checkout:click:{DATE}"]
    assert row["conversions"] == 2 and row["value"] == {"USD": 20.0}
    assert (row["epsilon"], row["k"], row["user_cap"]) == (1.0, 2, 1)
    assert [s.topic for s in sends] == ["privacy.ledger", "privacy.releases"]
    assert account.open == []


def test_the_release_epsilon_is_split_as_documented():
    noise = ExactNoise()
    account, bucket = filled(add_delta("a", "u1", T), add_delta("b", "u2", T))
    params = lanes.LaneParams(1.0, 4.0, 1, 2, 100.0, 0)
    run_release(account, bucket, params, noise)
    assert noise.calls == [("users", 0.25), ("conversions", 0.25), ("sums", 0.5)]


def test_a_late_conversion_of_a_released_date_is_not_in_the_lane():
    account, bucket = filled(add_delta("a", "u1", T))
    run_release(account, bucket)
    assert not lanes.on_bucket_delta(account, Bucket(), add_delta("z", "u9", T))
    assert account.open == []


def test_a_redelivered_request_resends_the_publish_request_without_charging():
    account, bucket = filled(add_delta("a", "u1", T))
    run_release(account, bucket)
    outcome, sends = run_release(account, Bucket())
    assert outcome.repeated == (DATE,) and outcome.released == ()
    assert account.weeks[next(iter(account.weeks))]["spent"] == 1.0
    assert sends[-1].value == {
        "op": "publish",
        "ad_account_id": ACCOUNT,
        "date": DATE,
        "release_id": "rel-1",
    }


def test_publish_sends_the_stored_rows_once_and_only_for_their_release_id():
    account, bucket = filled(add_delta("a", "u1", T), add_delta("b", "u2", T))
    run_release(account, bucket)
    wrong = {"date": DATE, "release_id": "other"}
    assert lanes.publish(account, wrong) == []
    right = {"date": DATE, "release_id": "rel-1"}
    sent = lanes.publish(account, right)
    assert [s.topic for s in sent] == ["reports.conversions.protected"]
    assert sent[0].value == account.released[DATE].rows[sent[0].key]
    assert lanes.publish(account, right) == []


def test_closed_dates_are_requested_unless_refused_this_week():
    account, _ = filled(add_delta("a", "u1", T))
    assert lanes.dates_to_request(account, NOW_MS, delay_s=0) == [DATE]
    assert lanes.dates_to_request(account, NOW_MS, delay_s=30 * 86_400) == []
    run_release(account, Bucket(), lanes.LaneParams(1.0, 0.5, 1, 1, 100.0, 0))
    assert lanes.dates_to_request(account, NOW_MS, delay_s=0) == []


def test_a_member_applied_already_still_opens_its_date():
    """A kill -9 between the batch's tables can keep the member and lose the open date."""
    account, bucket = filled(add_delta("a", "u1", T))
    account.open.clear()
    assert lanes.on_bucket_delta(account, bucket, add_delta("a", "u1", T))
    assert account.open == [DATE]
    assert not lanes.on_bucket_delta(account, bucket, add_delta("a", "u1", T))


def test_a_backfilled_date_of_last_year_opens_and_is_requested_for_release():
    """Valid relative to its own received_at_ms: in the lane, released once, as any date."""
    old = T - 365 * 86_400
    account, bucket = filled({**add_delta("a", "u1", old), "bucket": f"{ACCOUNT}:{utc_date(old)}"})
    assert account.open == [utc_date(old)]
    assert lanes.dates_to_request(account, NOW_MS, delay_s=0) == [utc_date(old)]


def test_a_released_date_stays_released_after_its_rows_are_pruned():
    """Past every lateness the rows go, the marker stays: a late back-fill of that date
    must not open it again (a second charge and release)."""
    account, bucket = filled(add_delta("a", "u1", T), add_delta("b", "u2", T))
    run_release(account, bucket)
    assert lanes.publish(account, {"date": DATE, "release_id": "rel-1"})
    later = NOW_MS + 400 * 86_400_000
    assert lanes.prune(account, later, delay_s=0)
    assert account.released[DATE].rows == {} and not lanes.prune(account, later, delay_s=0)
    assert not lanes.on_bucket_delta(account, Bucket(), add_delta("z", "u9", T))
    assert account.open == []
