"""Decoders of the consumed input topics under hostile input (shared/contract/inputs.py).

Whatever bytes arrive, a decoder returns the record or raises ``InvalidEvent``
with a reason code of docs/reason-codes.md; any other exception would be
dead-lettered only as ``processing_error``, without a stable reason.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contract.errors import InvalidEvent
from tests.chaos.hostile import DECODERS, VALID, check, fuzz, hostile

DOC = (Path(__file__).parents[4] / "docs" / "reason-codes.md").read_text()
REASON_CODES = DOC[DOC.index("## Onsite inputs") :]
TOPICS = sorted(DECODERS)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("topic", TOPICS)
def test_the_valid_record_decodes_to_itself(topic):
    assert DECODERS[topic](orjson.dumps(VALID[topic])) == VALID[topic]


@pytest.mark.parametrize("topic", TOPICS)
@given(raw=st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_random_bytes_are_rejected_with_a_reason(topic, raw):
    assert check(DECODERS[topic], raw) != "ok" or isinstance(orjson.loads(raw), dict)


@pytest.mark.parametrize("topic", TOPICS)
@given(value=json_values)
@settings(max_examples=200, deadline=None)
def test_any_json_value_is_accepted_or_rejected_with_a_documented_reason(topic, value):
    reason = check(DECODERS[topic], orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    assert reason == "ok" or f"`{reason}`" in REASON_CODES


@pytest.mark.parametrize("topic", TOPICS)
@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_one_field_of_any_wrong_type_gives_that_fields_reason(topic, data):
    field = data.draw(st.sampled_from(sorted(VALID[topic])))
    value = data.draw(json_values)
    record = {**VALID[topic], field: value}
    try:
        DECODERS[topic](orjson.dumps(record))
    except InvalidEvent as exc:
        assert exc.reason == f"invalid_{field}"


@pytest.mark.parametrize("topic", TOPICS)
@given(extra=st.dictionaries(st.text().filter(lambda k: k not in VALID), json_values, max_size=3))
@settings(max_examples=100, deadline=None)
def test_unknown_fields_are_kept_and_do_not_reject(topic, extra):
    extra = {k: v for k, v in extra.items() if k not in VALID[topic]}
    record = {**VALID[topic], **extra}
    assert DECODERS[topic](orjson.dumps(record)) == record


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("field", ["key_type", "op", "type", "kind"])
def test_an_unhashable_enum_value_is_an_invalid_event_not_a_type_error(topic, field):
    """[] or {} in an enumerated field once raised TypeError (unhashable in frozenset)."""
    for value in ([], {}):
        raw = orjson.dumps({**VALID[topic], field: value})
        assert check(DECODERS[topic], raw) in {"ok", f"invalid_{field}"}


def test_deeply_nested_json_is_rejected_as_invalid_json():
    raw = b"[" * 5000 + b"]" * 5000
    for decoder in DECODERS.values():
        assert check(decoder, raw) == "invalid_json"


def test_a_short_fuzz_run_meets_only_invalid_events():
    """The CI-sized version of `make fuzz` (100,000 inputs per topic there)."""
    seen = fuzz(inputs=3000, seed=random.randrange(1 << 30))
    for counts in seen.values():
        assert sum(counts.values()) == 3001
        assert all(f"`{r}`" in REASON_CODES for r in counts if r != "ok")


def test_hostile_never_raises_for_any_topic():
    rng = random.Random(3)
    for topic in VALID:
        for _ in range(200):
            assert isinstance(hostile(rng, topic), bytes)
