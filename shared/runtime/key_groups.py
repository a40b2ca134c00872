"""Composite table keys: the items of one owner (a user's engagements, an
identifier's watchers) one key each, ``"{owner}|{item}"``, in the owner's partition.

The owner holds no ``|`` (internal ids and identifiers are hex with a short
prefix), so ``"{owner}|"`` starts exactly the owner's keys: a prefix read finds
them all (``StateCache.with_prefix``, indexed by ``pipeline.groups_of``), and the
owner read back from a key says which partition the key lives in.
"""

from __future__ import annotations

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
