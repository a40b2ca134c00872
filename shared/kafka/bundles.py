"""Bundles: many small records of one topic partition carried in one Kafka record.

Every record on an internal hop paid Faust's per-record consume path (an Event,
the stream's queue, a decode) and the producer's per-record work, whatever it
carried; identity_match alone read 5.8 records per conversion (docs/benchmarks.md,
"Bundles"). A topic declared ``bundled: true`` in topics.yaml carries all of one
processing batch's records for one partition in one record (up to
``MAX_BUNDLE_BYTES``), in their order; its consumers unpack it and handle each
item as the record it stands for, with the bundle's partition and offset.

The frame is binary, so that unpacking is slicing, not a JSON decode of the
whole bundle: ``MAGIC``, then per item a 4-byte key length, the key, a 4-byte
value length (``0xFFFFFFFF`` for no value) and the value. A JSON value never
starts with the magic's NUL byte, so a consumer tells a bundle from a plain
record by its first bytes, and reads both (a producer with bundling off, or one
from before bundling, sends plain records).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

MAGIC = b"\x00cmb1"
#: A bundle's size bound: well under the broker's default max.message.bytes (1 MiB)
#: and a consumer's per-partition fetch size.
MAX_BUNDLE_BYTES = 128 * 1024

_LENGTH = struct.Struct(">I")
_NONE = 0xFFFFFFFF

Item = tuple[bytes | None, bytes | None]
#: (the key of its first item, the bundle's value)
Bundle = tuple[bytes | None, bytes]


class BundleError(ValueError):
    """A value that starts like a bundle but is not a whole one."""


def is_bundle(value: bytes | None) -> bool:
    return value is not None and value.startswith(MAGIC)


def _frame(key: bytes | None, value: bytes | None) -> bytes:
    key = key or b""
    head = _LENGTH.pack(len(key)) + key
    if value is None:
        return head + _LENGTH.pack(_NONE)
    return head + _LENGTH.pack(len(value)) + value


def pack(items: Iterable[Item], max_bytes: int = MAX_BUNDLE_BYTES) -> list[Bundle]:
    """The bundles carrying ``items`` in order: (key of its first item, bundle value).

    A bundle closes before an item would take it past ``max_bytes``; an item
    larger than that on its own gets a bundle of its own.
    """
    bundles: list[Bundle] = []
    key: bytes | None = None
    frames: list[bytes] = []
    size = len(MAGIC)
    for item_key, item_value in items:
        frame = _frame(item_key, item_value)
        if frames and size + len(frame) > max_bytes:
            bundles.append((key, MAGIC + b"".join(frames)))
            frames, size = [], len(MAGIC)
        if not frames:
            key = item_key
        frames.append(frame)
        size += len(frame)
    if frames:
        bundles.append((key, MAGIC + b"".join(frames)))
    return bundles


def unpack(value: bytes) -> list[Item]:
    """The items of one bundle, in order (an empty key comes back as None).

    All or nothing: a bundle cut short raises before any item is handed out.
    """
    if not is_bundle(value):
        raise BundleError("not a bundle")
    fields = [None if length is None else value[at : at + length] for at, length in _fields(value)]
    if len(fields) % 2:
        raise BundleError("a bundle cut short after a key")
    return [
        (key or None, item_value) for key, item_value in zip(fields[::2], fields[1::2], strict=True)
    ]


def count(value: bytes | None) -> int:
    """How many records ``value`` stands for (1 for a plain record or a bundle cut short),
    read from the frame's lengths without copying an item."""
    if value is None or not is_bundle(value):
        return 1
    try:
        fields = sum(1 for _ in _fields(value))
    except BundleError:
        return 1
    return 1 if fields % 2 else fields // 2


def expand(key: bytes | None, value: bytes | None) -> list[Item]:
    """The records one Kafka record stands for: a bundle's items, or the record itself."""
    if value is not None and is_bundle(value):
        return unpack(value)
    return [(key, value)]


def _fields(value: bytes) -> Iterator[tuple[int, int | None]]:
    """Where each field (key, value, key, ...) of a bundle starts, and its length
    (None: no value); the one walk of the frame that ``unpack`` and ``count`` share."""
    end, at = len(value), len(MAGIC)
    while at < end:
        if at + 4 > end:
            raise BundleError("a bundle cut short in a length")
        (length,) = _LENGTH.unpack_from(value, at)
        at += 4
        if length == _NONE:
            yield at, None
            continue
        if at + length > end:
            raise BundleError("a bundle cut short in a field")
        yield at, length
        at += length


__all__ = [
    "MAGIC",
    "MAX_BUNDLE_BYTES",
    "BundleError",
    "count",
    "expand",
    "is_bundle",
    "pack",
    "unpack",
]
