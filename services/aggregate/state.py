"""The aggregate service's table values, typed.

``rows`` (key: row key, on the partition of its ad account, like
reports.deltas): which conversion the row holds, at which version, with which
value. Wire layout ``{"members": {conversion_key: [version, present, value,
currency]}, "version": int}``. A removed member stays as ``[version, false,
null, null]`` so that an older ``add`` replayed later cannot bring it back.

Privacy lanes (docs/privacy.md), all on the partition of their ad account:

* ``strata`` (key ``"{ad_account_id}:{event_name}:{action_source}:{date}"``):
  ``{"members": {conversion_key: [version, present, status]}, "version": int}``;
* ``buckets``, the attributed conversions a protected release of a date is
  drawn from, one key per conversion (layout 2): key
  ``"{ad_account_id}:{date}|{conversion_key}"``, value ``[version, present,
  user, event_time, campaign_id, event_name, attribution_type, value,
  currency]``. Layout 1 kept a whole date in one value (key
  ``"{ad_account_id}:{date}"``, ``{"members": {conversion_key: [...]}}``),
  re-encoded and re-sent to the changelog with every batch that touched it
  (152 KB per value in the bench); a release still reads such a value;
* ``privacy`` (key ``ad_account_id``), the account's ledger and releases in ONE
  value, so that a charge and the noisy result it paid for are written (and
  reach the changelog) together: ``{"open": [date], "released": {date:
  release}, "weeks": {week: privacy.ledger record}}``.

``decode`` and ``encode`` keep exactly these layouts (the ones already in the
changelogs), so typed code needs no migration of old state. A layout change
bumps ``LAYOUT_VERSION`` and teaches ``decode`` every older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LAYOUT_VERSION = 2


@dataclass(frozen=True, slots=True)
class RowMember:
    """One conversion of a row; ``present`` False is a removal kept for its version."""

    version: int
    present: bool
    value: float | None = None
    currency: str | None = None


@dataclass(slots=True)
class Row:
    """A reports.conversions row's members and the version last published."""

    members: dict[str, RowMember] = field(default_factory=dict)
    version: int = 0


def decode_row(value: Any) -> Row:
    """A ``rows`` value (decoded JSON, or None for a new row) as typed state."""
    if value is None:
        return Row()
    members = {
        key: RowMember(int(version), bool(present), amount, currency)
        for key, (version, present, amount, currency) in value["members"].items()
    }
    return Row(members, int(value["version"]))


def encode_row(row: Row) -> dict[str, Any]:
    members = {key: [m.version, m.present, m.value, m.currency] for key, m in row.members.items()}
    return {"members": members, "version": row.version}


# ------------------------------------------------------------------ lanes


@dataclass(frozen=True, slots=True)
class StratumMember:
    version: int
    present: bool
    #: attributed | unattributed | unidentified
    status: str | None = None


@dataclass(slots=True)
class Stratum:
    members: dict[str, StratumMember] = field(default_factory=dict)
    version: int = 0


def decode_stratum(value: Any) -> Stratum:
    if value is None:
        return Stratum()
    members = {
        key: StratumMember(int(version), bool(present), status)
        for key, (version, present, status) in value["members"].items()
    }
    return Stratum(members, int(value["version"]))


def encode_stratum(stratum: Stratum) -> dict[str, Any]:
    members = {k: [m.version, m.present, m.status] for k, m in stratum.members.items()}
    return {"members": members, "version": stratum.version}


@dataclass(frozen=True, slots=True)
class BucketMember:
    """An attributed conversion of a (ad account, date), as the protected lane needs it."""

    version: int
    present: bool
    user: str | None = None
    event_time: int = 0
    campaign_id: str | None = None
    event_name: str | None = None
    attribution_type: str | None = None
    value: float | None = None
    currency: str | None = None


@dataclass(slots=True)
class Bucket:
    members: dict[str, BucketMember] = field(default_factory=dict)


def decode_bucket(value: Any) -> Bucket:
    """A whole bucket of layout 1 (one value per ad account and date)."""
    if value is None:
        return Bucket()
    return Bucket({key: BucketMember(*fields) for key, fields in value["members"].items()})


def member_key(bucket: str, conversion_key: str) -> str:
    """One member's ``buckets`` key (layout 2): ``"{ad_account_id}:{date}|{conversion_key}"``."""
    return f"{bucket}|{conversion_key}"


def members_prefix(bucket: str) -> str:
    return f"{bucket}|"


def decode_member(value: Any) -> BucketMember | None:
    return None if value is None else BucketMember(*value)


def encode_member(m: BucketMember) -> list[Any]:
    return [
        m.version,
        m.present,
        m.user,
        m.event_time,
        m.campaign_id,
        m.event_name,
        m.attribution_type,
        m.value,
        m.currency,
    ]


@dataclass(slots=True)
class Release:
    """A charged release of one (ad account, date): its noisy rows, drawn once."""

    release_id: str
    week: str
    released_at_ms: int
    #: The reports.conversions.protected records, keyed.
    rows: dict[str, dict[str, Any]]
    published: bool = False


@dataclass(slots=True)
class PrivacyAccount:
    """One ad account's privacy state: open dates, releases, ledger weeks."""

    open: list[str] = field(default_factory=list)
    released: dict[str, Release] = field(default_factory=dict)
    #: ISO week -> its privacy.ledger record.
    weeks: dict[str, dict[str, Any]] = field(default_factory=dict)


def decode_privacy(value: Any) -> PrivacyAccount:
    if value is None:
        return PrivacyAccount()
    released = {
        date: Release(
            r["release_id"], r["week"], int(r["released_at_ms"]), r["rows"], bool(r["published"])
        )
        for date, r in value["released"].items()
    }
    return PrivacyAccount(list(value["open"]), released, dict(value["weeks"]))


def encode_privacy(account: PrivacyAccount) -> dict[str, Any] | None:
    if not (account.open or account.released or account.weeks):
        return None
    released = {
        date: {
            "release_id": r.release_id,
            "week": r.week,
            "released_at_ms": r.released_at_ms,
            "rows": r.rows,
            "published": r.published,
        }
        for date, r in account.released.items()
    }
    return {"open": sorted(account.open), "released": released, "weeks": account.weeks}
