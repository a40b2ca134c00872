"""The aggregate service's table values, typed.

``results`` (key: conversion_key, co-partitioned with conversions.attributed):
the last result counted in the reports. Wire layout ``{"version": int, "row":
"<row key>"}``.

``rows`` (key: row key, on the partition of its ad account, like
reports.deltas): which conversion the row holds, at which version, with which
value. Wire layout ``{"members": {conversion_key: [version, present, value,
currency]}, "version": int}``. A removed member stays as ``[version, false,
null, null]`` so that an older ``add`` replayed later cannot bring it back.

``decode`` and ``encode`` keep exactly these layouts (the ones already in the
changelogs), so typed code needs no migration of old state. A layout change
bumps ``LAYOUT_VERSION`` and teaches ``decode`` every older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LAYOUT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Counted:
    """The last result of one conversion counted in the reports."""

    version: int
    #: The key of the reports.conversions row it is counted in.
    row: str


def decode_counted(value: Any) -> Counted | None:
    """A ``results`` value (decoded JSON, or None for a new key) as typed state."""
    if value is None:
        return None
    return Counted(int(value["version"]), str(value["row"]))


def encode_counted(counted: Counted) -> dict[str, Any]:
    return {"version": counted.version, "row": counted.row}


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
