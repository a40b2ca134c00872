"""The in-memory view of a compacted topic (shared/kafka/compacted_view.py)."""

import orjson

from shared.kafka.compacted_view import CompactedView
from shared.runtime.settings import Settings


def view():
    return CompactedView(Settings(bootstrap="127.0.0.1:1"), "t", orjson.loads)


def test_latest_record_per_key_wins_and_tombstones_remove():
    v = view()
    v.apply(b"a", b'{"n": 1}')
    v.apply(b"a", b'{"n": 2}')
    v.apply(b"b", b'{"n": 3}')
    v.apply(b"b", None)
    assert v.values == {"a": {"n": 2}}


def test_a_record_that_does_not_decode_is_skipped_and_keeps_the_previous_value():
    v = view()
    v.apply(b"a", b'{"n": 1}')
    v.apply(b"a", b"not json")
    v.apply(None, b'{"n": 9}')
    assert v.get("a") == {"n": 1} and not v.ready.is_set()


def test_a_record_a_custom_apply_rejects_is_skipped_and_the_view_goes_on():
    """Hostile input on a view with its own apply (api.tokens) must not loop the follower."""
    applied = []

    def apply(key, value):
        applied.append(orjson.loads(value)["n"])

    v = CompactedView("127.0.0.1:1", "t", apply=apply)
    v.apply_safely(b"a", b"\xff random bytes")
    v.apply_safely(b"a", b'{"n": 2}')
    assert applied == [2]
