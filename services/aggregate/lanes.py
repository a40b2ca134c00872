"""The privacy lanes' steps (docs/privacy.md), pure apart from the injected noise.

Both lanes ride on reports.deltas (keyed by ad account), next to the observed
rows: ``shared.contract.report_deltas.deltas_of`` (sent by attribute's
publisher) says what a new version of a conversion changes in the modeled
stratum and protected bucket it leaves and joins.

* modeled: ``rules.on_delta`` with ``stratum_member`` + ``publish_stratum``
  (live, versioned);
* protected: ``on_bucket_delta`` keeps a date's attributed conversions until
  the date is released; ``release`` charges the ledger and draws the noisy
  rows ONCE, storing them with the charge (one table value); ``publish``
  sends exactly those stored rows. Charging and publishing are two steps,
  connected by a ``publish`` record on privacy.releases that is consumed only
  after the charge is in the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from services.aggregate.noise import Thresholded
from services.aggregate.state import (
    Bucket,
    BucketMember,
    PrivacyAccount,
    Release,
    StratumMember,
    StratumTotals,
)
from shared.contract import privacy_lanes as pl
from shared.contract.records import Send

MODELED = "reports.conversions.modeled"
PROTECTED = "reports.conversions.protected"
LEDGER = "privacy.ledger"
RELEASES = "privacy.releases"
#: Ledger weeks kept in the table (the compacted topic keeps them all).
WEEKS_KEPT = 5


# ---------------------------------------------------------------- modeled


def stratum_member(version: int, delta: dict[str, Any]) -> StratumMember:
    """A stratum's member as a modeled delta makes it (see ``rules.on_delta``)."""
    present = delta["op"] == "add"
    return StratumMember(version, present, delta.get("status") if present else None)


def modeled_record(key: str, totals: StratumTotals, k: int) -> dict[str, Any] | None:
    """The reports.conversions.modeled value of a stratum (None when empty)."""
    if totals.present <= 0:
        return None
    account, rest = key.split(":", 1)
    event_name, action_source, date = rest.rsplit(":", 2)
    attributed = totals.statuses.get("attributed", 0)
    identified = attributed + totals.statuses.get("unattributed", 0)
    unidentified = totals.statuses.get("unidentified", 0)
    estimate = pl.modeled_estimate(identified, attributed, unidentified, k)
    return {
        "ad_account_id": account,
        "event_name": event_name,
        "action_source": action_source,
        "date": date,
        "identified": identified,
        "identified_attributed": attributed,
        "unidentified": unidentified,
        "modeled_attributed": estimate.modeled_attributed,
        "ci95": list(estimate.ci95) if estimate.ci95 is not None else None,
        "method": "wilson",
        "version": totals.version,
    }


def publish_stratum(key: str, totals: StratumTotals, k: int) -> Send:
    return Send(MODELED, key, modeled_record(key, totals, k))


# --------------------------------------------------------------- protected


def on_bucket_delta(account: PrivacyAccount, bucket: Bucket, delta: dict[str, Any]) -> bool:
    """Apply one protected delta; True if the bucket (or the account's open dates) changed.

    A date already released takes no conversion: "conversions of it that arrive
    later are not in the lane". Any other date does, however old: events are valid
    relative to their own ``received_at_ms``, so a back-fill of last year's events
    opens its dates, closed already, and the next release check releases them once.
    """
    date = delta["bucket"].rsplit(":", 1)[1]
    if date in account.released:
        return False
    opened = date not in account.open
    if opened:
        # Also for a member applied already: a kill -9 between the tables of a
        # batch can have kept the member and lost the open date.
        account.open.append(date)
    key, version = delta["conversion_key"], int(delta["version"])
    current = bucket.members.get(key)
    if current is not None and current.version >= version:
        return opened
    if delta["op"] == "add":
        bucket.members[key] = BucketMember(
            version,
            True,
            delta["user"],
            int(delta["event_time"]),
            delta["campaign_id"],
            delta["event_name"],
            delta["attribution_type"],
            delta.get("value"),
            delta.get("currency"),
        )
    else:
        bucket.members[key] = BucketMember(version, False)
    return True


@dataclass(frozen=True, slots=True)
class LaneParams:
    epsilon: float
    budget: float
    k: int
    user_cap: int
    value_cap: float
    delay_s: int


class Noise(Protocol):
    mechanism: str

    def thresholded_counts(
        self, counts: dict[str, int], epsilon: float, user_cap: int, threshold: int
    ) -> Thresholded: ...

    def counts(self, values: list[int], epsilon: float, sensitivity: int) -> list[int]: ...

    def sums(self, values: list[float], epsilon: float, sensitivity: float) -> list[float]: ...


def contributions(bucket: Bucket) -> list[pl.Contribution]:
    return [
        pl.Contribution(
            key,
            m.user,
            m.event_time,
            orjson.dumps([m.campaign_id, m.event_name, m.attribution_type]).decode(),
            m.value,
            m.currency,
        )
        for key, m in bucket.members.items()
        if m.present and m.user
    ]


def noisy_rows(
    account_id: str,
    date: str,
    bucket: Bucket,
    params: LaneParams,
    noise: Noise,
    released_at_ms: int,
) -> dict[str, dict[str, Any]]:
    """The protected records of one release: bounded, clipped, noised, thresholded."""
    bounded = pl.bound_contributions(contributions(bucket), params.user_cap)
    exact = pl.exact_release(bounded, params.value_cap)
    split = pl.split_epsilon(params.epsilon, params.user_cap)
    users = noise.thresholded_counts(exact.users, split.users, params.user_cap, params.k)
    rows = sorted(users.counts)
    if params.user_cap == 1:
        conversions = [users.counts[r] for r in rows]  # the same statistic: no second draw
    else:
        exact_conversions = [exact.conversions[r] for r in rows]
        conversions = noise.counts(exact_conversions, split.conversions, params.user_cap)
    cells = sorted(cell for cell in exact.sums if cell[0] in users.counts)
    sums = noise.sums(
        [exact.sums[c] for c in cells], split.sums, params.user_cap * params.value_cap
    )
    values: dict[str, dict[str, float]] = {r: {} for r in rows}
    for (row, currency), total in zip(cells, sums, strict=True):
        values[row][currency] = round(max(total, 0.0), 2)
    records = {}
    for row, count in zip(rows, conversions, strict=True):
        campaign_id, event_name, attribution_type = orjson.loads(row)
        key = f"{account_id}:{campaign_id}:{event_name}:{attribution_type}:{date}"
        records[key] = {
            "ad_account_id": account_id,
            "campaign_id": campaign_id,
            "event_name": event_name,
            "attribution_type": attribution_type,
            "date": date,
            "conversions": max(int(count), 0),
            "value": values[row],
            "epsilon": params.epsilon,
            "delta": users.delta,
            "k": params.k,
            "user_cap": params.user_cap,
            "value_cap": params.value_cap,
            "mechanism": noise.mechanism,
            "released_at_ms": released_at_ms,
        }
    return records


def ledger_week(
    account: PrivacyAccount, account_id: str, week: str, budget: float
) -> pl.LedgerWeek:
    doc = account.weeks.get(week)
    if doc is None:
        return pl.LedgerWeek(account_id, week, budget)
    return pl.LedgerWeek.from_record(doc)


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    released: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    #: Already released (the publish request is sent again).
    repeated: tuple[str, ...] = ()


def due_dates(account: PrivacyAccount, request: dict[str, Any]) -> list[str]:
    """The open dates a release request names (``dates`` and/or ``before``)."""
    dates = request.get("dates")
    before = request.get("before")
    return sorted(
        d for d in account.open if (dates is None or d in dates) and (before is None or d < before)
    )


def release(
    account: PrivacyAccount,
    account_id: str,
    buckets: dict[str, Bucket],
    request: dict[str, Any],
    params: LaneParams,
    noise: Noise,
    new_release_id: Any,
    now_ms: int,
) -> tuple[ReleaseOutcome, list[Send]]:
    """One release request of an ad account: charge, draw and store, or refuse.

    ``account`` and ``buckets`` (date -> bucket; emptied when released) are
    updated in place. The week is the request's (``requested_at_ms``), so a
    redelivered request charges the same week. What is sent: the ledger
    record of every week touched, and for each charged date a ``publish``
    request that will send its stored rows. No protected row is sent here.
    """
    requested_at_ms = int(request["requested_at_ms"])
    week_name = pl.iso_week(requested_at_ms)
    week = ledger_week(account, account_id, week_name, params.budget)
    released, refused, repeated = [], [], []
    sends: list[Send] = []
    named = request.get("dates") or []
    for date in sorted(set(named) & set(account.released)):
        if not account.released[date].published:
            repeated.append(date)
    touched = False
    for date in due_dates(account, request):
        answer = pl.charge(week, date, params.epsilon)
        week, touched = answer.week, touched or answer.changed
        if not answer.granted:
            if answer.changed:
                refused.append(date)
            continue
        rows = noisy_rows(account_id, date, buckets[date], params, noise, now_ms)
        account.released[date] = Release(str(new_release_id()), week_name, now_ms, rows)
        account.open.remove(date)
        buckets[date] = Bucket()
        released.append(date)
    if touched:
        account.weeks[week_name] = week.record()
        for old in sorted(account.weeks)[:-WEEKS_KEPT]:
            del account.weeks[old]
    if touched or released or repeated:
        key = pl.ledger_key(account_id, week_name)
        sends.append(Send(LEDGER, key, account.weeks.get(week_name, week.record())))
    for date in (*released, *repeated):
        publish = {
            "op": "publish",
            "ad_account_id": account_id,
            "date": date,
            "release_id": account.released[date].release_id,
        }
        sends.append(Send(RELEASES, account_id, publish))
    return ReleaseOutcome(tuple(released), tuple(refused), tuple(repeated)), sends


def publish(account: PrivacyAccount, request: dict[str, Any]) -> list[Send]:
    """A publish request: the stored rows of that release, once (marked published)."""
    stored = account.released.get(request["date"])
    if stored is None or stored.release_id != request["release_id"] or stored.published:
        return []  # a draw that was never charged (lost in a crash), or done already
    stored.published = True
    return [Send(PROTECTED, key, row) for key, row in sorted(stored.rows.items())]


def prune(account: PrivacyAccount, now_ms: int, delay_s: int) -> bool:
    """Drop the rows of published releases past every lateness; True if any went.

    The release itself stays, as the marker that the date was released: a
    back-filled conversion of that date may still come, and must not open it
    again (a second release would charge and publish the date twice). A marker
    without rows is a few dozen bytes per ad account and date.
    """
    changed = False
    for date, release in account.released.items():
        if release.published and release.rows and pl.is_beyond_lateness(date, now_ms, delay_s):
            release.rows = {}
            changed = True
    return changed


def dates_to_request(account: PrivacyAccount, now_ms: int, delay_s: int) -> list[str]:
    """Closed open dates, without those the current week has refused already."""
    refused = set(account.weeks.get(pl.iso_week(now_ms), {}).get("refused", ()))
    return [
        d for d in sorted(account.open) if pl.is_closed(d, now_ms, delay_s) and d not in refused
    ]
