"""Bundles: a producer batch's records of one partition in one Kafka record."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import bundles

keys = st.one_of(st.none(), st.binary(min_size=1, max_size=40))
values = st.one_of(st.none(), st.binary(max_size=300))
items = st.lists(st.tuples(keys, values), min_size=1, max_size=60)


@given(items, st.integers(min_value=16, max_value=2_000))
def test_packed_items_come_back_in_order_whatever_the_bound(
    given_items: list[tuple[bytes | None, bytes | None]], bound: int
) -> None:
    packed = bundles.pack(given_items, max_bytes=bound)
    assert [item for _, value in packed for item in bundles.unpack(value)] == given_items


@given(items)
def test_a_bundle_is_keyed_by_its_first_item(
    given_items: list[tuple[bytes | None, bytes | None]],
) -> None:
    ((key, _),) = bundles.pack(given_items, max_bytes=1 << 20)
    assert key == given_items[0][0]


def test_a_bundle_closes_before_its_bound() -> None:
    payload = b"x" * 100
    packed = bundles.pack([(b"k", payload)] * 10, max_bytes=350)
    assert len(packed) == 4  # 3 items of 113 bytes fit under 350 with the magic
    assert all(len(value) <= 350 for _, value in packed)


def test_an_item_larger_than_the_bound_gets_a_bundle_of_its_own() -> None:
    packed = bundles.pack([(b"a", b"1"), (b"b", b"y" * 500), (b"c", b"2")], max_bytes=100)
    assert [key for key, _ in packed] == [b"a", b"b", b"c"]


def test_a_json_record_is_not_a_bundle() -> None:
    assert not bundles.is_bundle(orjson.dumps({"conversion_key": "c"}))
    assert not bundles.is_bundle(None)
    assert not bundles.is_bundle(b"")


@pytest.mark.parametrize("cut", [6, 9, 12])
def test_a_bundle_cut_short_raises_before_any_item(cut: int) -> None:
    ((_, value),) = bundles.pack([(b"key", b"value"), (b"k2", b"v2")])
    with pytest.raises(bundles.BundleError):
        bundles.unpack(value[:cut])


def test_unpacking_a_plain_record_raises() -> None:
    with pytest.raises(bundles.BundleError):
        bundles.unpack(b'{"a": 1}')


@given(items)
def test_count_is_the_number_of_items(given_items: list[tuple[bytes | None, bytes | None]]) -> None:
    ((_, value),) = bundles.pack(given_items, max_bytes=1 << 20)
    assert bundles.count(value) == len(given_items)


def test_a_plain_record_or_a_bundle_cut_short_counts_one() -> None:
    ((_, value),) = bundles.pack([(b"key", b"value"), (b"k2", b"v2")])
    assert bundles.count(b'{"a": 1}') == bundles.count(None) == 1
    assert bundles.count(value[:-1]) == bundles.count(value[:7]) == 1
