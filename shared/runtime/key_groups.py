"""Composite table keys: the items of one owner (a user's engagements, an
identifier's watchers) one key each, ``"{owner}|{item}"``, in the owner's partition.

The owner holds no ``|`` (internal ids and identifiers are hex with a short
prefix), so ``"{owner}|"`` starts exactly the owner's keys: a prefix read finds
them all (``StateCache.with_prefix``, indexed by ``pipeline.groups_of``), and the
owner read back from a key says which partition the key lives in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from shared.values import value_class

SEPARATOR = "|"


def group_prefix(owner: str) -> str:
    """The start of every key of ``owner``'s items."""
    return owner + SEPARATOR


def group_key(owner: str, item: str) -> str:
    """The key of one of ``owner``'s items (the item may hold ``|`` itself)."""
    return owner + SEPARATOR + item


def owner_of(key: str) -> str:
    """The owner of a composite key, the key its partition was chosen by."""
    return key.split(SEPARATOR, 1)[0]


@value_class(frozen=True, slots=True)
class ItemWrites:
    """What to write of an owner's items: values to put by item, items to delete."""

    puts: Mapping[str, Any]
    deletes: tuple[str, ...]


def item_writes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    again: Collection[str] = (),
    encode: Callable[[Any], Any] = lambda item: item,
) -> ItemWrites:
    """The writes that take an owner's items from ``before`` (what an input read of
    them) to ``after``: a new or changed item is put (encoded), and so is one in
    ``again`` (a redelivered input writes again what its first delivery may have
    left out of the changelog: see StateCache.rewrite); an item read and no longer
    in ``after`` is deleted. Items not read are neither put nor deleted."""
    puts = {
        item: encode(value)
        for item, value in after.items()
        if before.get(item) != value or item in again
    }
    return ItemWrites(puts, tuple(item for item in before if item not in after))
