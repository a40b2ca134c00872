"""The rules of the privacy lanes (docs/privacy.md), as pure functions.

* protected lane: which dates are due, the per-user contribution bound (the
  earliest conversions by event_time, ties by conversion_key), value clipping,
  the split of a release's ε, the weekly ledger (charge or refuse);
* modeled lane: the Wilson interval and the modeled estimate.

The noise itself is drawn by OpenDP in the aggregate service; nothing here
is random.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from shared.contract.limits import DAY_MS, MAX_EVENT_AGE_MS

#: z of a two-sided 95 % normal interval.
Z95 = 1.959963984540054
#: ε comparisons tolerate float rounding of sums like 0.1 + 0.2.
EPSILON_SLACK = 1e-9


def iso_week(at_ms: int) -> str:
    """The ISO week of a time, like ``2026-W48``."""
    year, week, _ = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.UTC).isocalendar()
    return f"{year}-W{week:02d}"


def date_end_ms(date: str) -> int:
    """The end (exclusive) of a UTC day ``YYYY-MM-DD`` in Unix ms."""
    start = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(), tzinfo=dt.UTC)
    return int(start.timestamp() * 1000) + DAY_MS


def is_closed(date: str, now_ms: int, release_delay_s: int) -> bool:
    """Whether a date may be released: its end plus the delay has passed."""
    return now_ms >= date_end_ms(date) + release_delay_s * 1000


def is_beyond_lateness(date: str, now_ms: int, release_delay_s: int) -> bool:
    """Whether no valid conversion of ``date`` can still arrive (nor be released).

    Events are accepted up to ``MAX_EVENT_AGE`` late; a date this far past
    its release time gets no new bucket, so its released marker may go.
    """
    return now_ms >= date_end_ms(date) + release_delay_s * 1000 + MAX_EVENT_AGE_MS + DAY_MS


# ------------------------------------------------------------ contribution bounds


@dataclass(frozen=True, slots=True)
class Contribution:
    """One attributed conversion of a release, as the protected lane sees it."""

    conversion_key: str
    user: str
    event_time: int
    row: str
    value: float | None
    currency: str | None


def bound_contributions(contributions: Iterable[Contribution], user_cap: int) -> list[Contribution]:
    """Each user's earliest ``user_cap`` conversions (by event_time, then conversion_key)."""
    kept: list[Contribution] = []
    per_user: dict[str, int] = {}
    for c in sorted(contributions, key=lambda c: (c.event_time, c.conversion_key)):
        if per_user.get(c.user, 0) < user_cap:
            per_user[c.user] = per_user.get(c.user, 0) + 1
            kept.append(c)
    return kept


def clip(value: float | None, cap: float) -> float:
    """A conversion's value clipped to ``[0, cap]`` (no value counts as 0)."""
    if value is None or math.isnan(value):
        return 0.0
    return min(max(float(value), 0.0), cap)


@dataclass(frozen=True, slots=True)
class ExactRelease:
    """The bounded exact statistics of one release, per row (before noise)."""

    users: dict[str, int]
    conversions: dict[str, int]
    #: Per (row, currency): the clipped value sum.
    sums: dict[tuple[str, str], float]


def exact_release(bounded: Iterable[Contribution], value_cap: float) -> ExactRelease:
    users: dict[str, set[str]] = {}
    conversions: dict[str, int] = {}
    sums: dict[tuple[str, str], float] = {}
    for c in bounded:
        users.setdefault(c.row, set()).add(c.user)
        conversions[c.row] = conversions.get(c.row, 0) + 1
        if c.currency:
            cell = (c.row, c.currency)
            sums[cell] = sums.get(cell, 0.0) + clip(c.value, value_cap)
    return ExactRelease({row: len(u) for row, u in users.items()}, conversions, sums)


@dataclass(frozen=True, slots=True)
class EpsilonSplit:
    """How one release's ε is shared between its three noisy statistics."""

    users: float
    conversions: float
    sums: float


def split_epsilon(epsilon: float, user_cap: int) -> EpsilonSplit:
    """Half for counts, half for value sums.

    With ``user_cap == 1`` a row's conversions *are* its distinct users, so
    one noisy count serves both (the whole counting half); otherwise the
    distinct-user count and the conversion count take a quarter each.
    """
    if user_cap == 1:
        return EpsilonSplit(users=epsilon / 2, conversions=0.0, sums=epsilon / 2)
    return EpsilonSplit(users=epsilon / 4, conversions=epsilon / 4, sums=epsilon / 2)


# ------------------------------------------------------------------- the ledger


@dataclass(frozen=True, slots=True)
class LedgerWeek:
    """One ad account's privacy budget in one ISO week (the privacy.ledger value)."""

    ad_account_id: str
    week: str
    budget: float
    spent: float = 0.0
    released: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {
            "ad_account_id": self.ad_account_id,
            "week": self.week,
            "budget": self.budget,
            "spent": self.spent,
            "released": list(self.released),
            "refused": list(self.refused),
        }

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> LedgerWeek:
        return cls(
            str(doc["ad_account_id"]),
            str(doc["week"]),
            float(doc["budget"]),
            float(doc["spent"]),
            tuple(doc["released"]),
            tuple(doc["refused"]),
        )


def ledger_key(ad_account_id: str, week: str) -> str:
    return f"{ad_account_id}:{week}"


@dataclass(frozen=True, slots=True)
class Charge:
    """The ledger's answer to one release: the new week and whether it may go out."""

    week: LedgerWeek
    granted: bool
    #: False when the answer repeats one already recorded (nothing new to say).
    changed: bool = field(default=True)


def charge(week: LedgerWeek, date: str, epsilon: float) -> Charge:
    """Charge a release of ``date`` to the week, or refuse it when it would exceed.

    A date already released this week is not charged again (granted, unchanged).
    """
    if date in week.released:
        return Charge(week, granted=True, changed=False)
    if week.spent + epsilon > week.budget + EPSILON_SLACK:
        if date in week.refused:
            return Charge(week, granted=False, changed=False)
        return Charge(replace(week, refused=(*week.refused, date)), granted=False)
    charged = replace(week, spent=week.spent + epsilon, released=(*week.released, date))
    return Charge(charged, granted=True)


# ---------------------------------------------------------------- modeled lane


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (``trials`` > 0)."""
    if trials <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # At the ends the bounds are exactly 0 and 1; float rounding would miss them.
    low = 0.0 if successes == 0 else min(p, centre - half)
    high = 1.0 if successes == trials else max(p, centre + half)
    return low, high


@dataclass(frozen=True, slots=True)
class Modeled:
    modeled_attributed: float | None
    ci95: tuple[float, float] | None


def modeled_estimate(
    identified: int, identified_attributed: int, unidentified: int, k: int
) -> Modeled:
    """The attributed share of the identified, applied to the unidentified count.

    Below ``k`` identified conversions (or none at all) there is no estimate.
    """
    if identified < max(k, 1):
        return Modeled(None, None)
    share = identified_attributed / identified
    low, high = wilson_interval(identified_attributed, identified)
    return Modeled(
        round(unidentified * share, 4),
        (round(unidentified * low, 4), round(unidentified * high, 4)),
    )
