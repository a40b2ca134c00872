"""The aggregate service's table values, typed.

Observed rows and modeled strata keep their members one key each, apart from
a small value of totals, so that no value grows with the conversions of a
day (a changelog record must stay far below Kafka's 1 MB per record; one
stratum value held about 90 bytes per conversion):

* ``rows`` (key: row key, on the partition of its ad account, like
  reports.deltas): the row's totals (layout 2) ``{"layout": 2,
  "conversions": int, "sums": {currency: [members with a value,
  "exact decimal sum"]}, "version": int}``;
* ``row_members`` (key ``"{row key}|{conversion_key}"``): one conversion of
  the row, ``[version, present, value, currency]``. A removed member stays
  as ``[version, false, null, null]`` so that an older ``add`` replayed
  later cannot bring it back.

Privacy lanes (docs/privacy.md), all on the partition of their ad account:

* ``strata`` (key ``"{ad_account_id}:{event_name}:{action_source}:{date}"``):
  the stratum's totals (layout 2) ``{"layout": 2, "present": int,
  "statuses": {status: int}, "version": int}``;
* ``stratum_members`` (key ``"{stratum key}|{conversion_key}"``): ``[version,
  present, status]``;
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

Layout 1 of ``rows`` and ``strata`` kept the members inside the value
(``{"members": {conversion_key: member}, "version": int}``). Readers still
read it (``decode_row_totals`` and ``decode_stratum_totals`` count its
members); the rows agent moves its members to their own keys the first time
a delta touches it (``decode_row`` and ``decode_stratum`` read it then).
A layout change bumps ``LAYOUT_VERSION`` and teaches the decoders every older one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from shared.values import value_class

LAYOUT_VERSION = 2
#: Between a row's or a stratum's key and a conversion_key in its members' keys.
MEMBER_SEPARATOR = "|"
_ROW_KEY = json.JSONDecoder()
#: Sums of values kept running (added and taken away) must be exact: the shortest
#: decimal form of any float (at most 17 digits, exponents -324 to 308) and every sum
#: of such fits in 700 digits, where the default context's 28 would round
#: (1.2e11 + 0.30000000000000004 - 1.2e11 is not 0.30000000000000004 there).
EXACT = Context(prec=700, Emin=-999_999, Emax=999_999)
#: The statuses a modeled stratum counts.
STATUSES = ("attributed", "unattributed", "unidentified")


@value_class(frozen=True, slots=True)
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
    """A row in layout 1 (members inside the value): what older workers wrote."""
    members = {key: [m.version, m.present, m.value, m.currency] for key, m in row.members.items()}
    return {"members": members, "version": row.version}


@dataclass(slots=True)
class RowTotals:
    """What a row publishes, kept up to date member by member (layout 2 of ``rows``)."""

    conversions: int = 0
    #: currency -> (present members with a value in it, their exact sum)
    sums: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    version: int = 0

    def count(self, member: RowMember | None, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) one member's part of the totals."""
        if member is None or not member.present:
            return
        self.conversions += sign
        if member.value is None or not member.currency:
            return
        held, total = self.sums.get(member.currency, (0, Decimal(0)))
        held += sign
        amount = Decimal(repr(member.value))
        total = EXACT.add(total, amount) if sign > 0 else EXACT.subtract(total, amount)
        if held:
            self.sums[member.currency] = (held, total)
        else:
            self.sums.pop(member.currency, None)


def counted(totals: Any, members: Iterable[Any]) -> Any:
    """``totals`` (a new one, of the version it is to have) with ``members`` counted in:
    a recount, or the totals of a layout-1 value."""
    for member in members:
        totals.count(member, 1)
    return totals


def row_totals_of(members: Iterable[RowMember | None], version: int) -> RowTotals:
    totals: RowTotals = counted(RowTotals(version=version), members)
    return totals


def decode_row_totals(value: Any) -> RowTotals:
    """A ``rows`` value of either layout (None: a new row) as its totals."""
    if value is None:
        return RowTotals()
    if is_layout_1(value):
        row = decode_row(value)
        return row_totals_of(row.members.values(), row.version)
    sums = {cur: (int(held), Decimal(total)) for cur, (held, total) in value["sums"].items()}
    return RowTotals(int(value["conversions"]), sums, int(value["version"]))


def encode_row_totals(totals: RowTotals) -> dict[str, Any]:
    sums = {cur: [held, str(total)] for cur, (held, total) in sorted(totals.sums.items())}
    return {
        "layout": LAYOUT_VERSION,
        "conversions": totals.conversions,
        "sums": sums,
        "version": totals.version,
    }


def decode_row_member(value: Any) -> RowMember | None:
    if value is None:
        return None
    version, present, amount, currency = value
    return RowMember(int(version), bool(present), amount, currency)


def encode_row_member(member: RowMember) -> list[Any]:
    return [member.version, member.present, member.value, member.currency]


def is_layout_1(value: Any) -> bool:
    """Whether a ``rows`` or ``strata`` value still holds its members (layout 1)."""
    return isinstance(value, dict) and "members" in value


# ------------------------------------------------------------------ lanes


@value_class(frozen=True, slots=True)
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
    """A stratum in layout 1 (members inside the value): what older workers wrote."""
    members = {k: [m.version, m.present, m.status] for k, m in stratum.members.items()}
    return {"members": members, "version": stratum.version}


@dataclass(slots=True)
class StratumTotals:
    """What a modeled stratum publishes, kept member by member (layout 2 of ``strata``)."""

    present: int = 0
    #: status (``STATUSES``) -> present members with it
    statuses: dict[str, int] = field(default_factory=dict)
    version: int = 0

    def count(self, member: StratumMember | None, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) one member's part of the totals."""
        if member is None or not member.present:
            return
        self.present += sign
        if member.status in STATUSES:
            held = self.statuses.get(member.status, 0) + sign
            if held:
                self.statuses[member.status] = held
            else:
                self.statuses.pop(member.status, None)


def stratum_totals_of(members: Iterable[StratumMember | None], version: int) -> StratumTotals:
    totals: StratumTotals = counted(StratumTotals(version=version), members)
    return totals


def decode_stratum_totals(value: Any) -> StratumTotals:
    """A ``strata`` value of either layout (None: a new stratum) as its totals."""
    if value is None:
        return StratumTotals()
    if is_layout_1(value):
        stratum = decode_stratum(value)
        return stratum_totals_of(stratum.members.values(), stratum.version)
    statuses = {status: int(held) for status, held in value["statuses"].items()}
    return StratumTotals(int(value["present"]), statuses, int(value["version"]))


def encode_stratum_totals(totals: StratumTotals) -> dict[str, Any]:
    return {
        "layout": LAYOUT_VERSION,
        "present": totals.present,
        "statuses": dict(sorted(totals.statuses.items())),
        "version": totals.version,
    }


def decode_stratum_member(value: Any) -> StratumMember | None:
    if value is None:
        return None
    version, present, status = value
    return StratumMember(int(version), bool(present), status)


def encode_stratum_member(member: StratumMember) -> list[Any]:
    return [member.version, member.present, member.status]


@value_class(frozen=True, slots=True)
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


def member_key(owner: str, conversion_key: str) -> str:
    """One member's key: ``"{owner}|{conversion_key}"``, the owner a row, a stratum or
    a bucket (``row_members``, ``stratum_members``, ``buckets`` layout 2)."""
    return f"{owner}{MEMBER_SEPARATOR}{conversion_key}"


def members_prefix(owner: str) -> str:
    """The start of every member key of a row, a stratum or a bucket."""
    return f"{owner}{MEMBER_SEPARATOR}"


def ad_account_of_row_key(key: str) -> str:
    """The ad account a ``rows`` or ``row_members`` key is partitioned by: the first
    field of the row key, a JSON list (whatever follows it, a member's ``|`` and
    conversion key, is not read)."""
    row, _ = _ROW_KEY.raw_decode(key)
    return str(row[0])


def ad_account_of_key(key: str) -> str:
    """The ad account a ``strata``, ``stratum_members`` or ``buckets`` key is
    partitioned by: the key's first field (``{ad_account_id}:...``)."""
    return key.split(":", 1)[0]


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
