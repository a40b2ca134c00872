"""Dead-letter text of user-keyed inputs (services/attribute/redaction.py)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.attribute.redaction import NOT_SHOWN, REDACTED, text_without_user_ids


def test_user_id_field_and_strings_holding_the_user_id_are_redacted() -> None:
    value = {"user_id": "u-17", "kind": "bogus", "note": "for u-17", "nested": [{"who": "u-17"}]}
    text = text_without_user_ids(orjson.dumps(value), b"u-17")
    assert orjson.loads(text) == {
        "user_id": REDACTED,
        "kind": "bogus",
        "note": REDACTED,
        "nested": [{"who": REDACTED}],
    }


def test_the_key_is_redacted_even_when_the_payload_names_someone_else() -> None:
    value = {"user_id": "u-other", "comment": "key u-17"}
    text = text_without_user_ids(orjson.dumps(value), b"u-17")
    assert "u-17" not in text and "u-other" not in text


def test_a_value_that_is_not_a_json_object_is_not_shown() -> None:
    assert text_without_user_ids(b"not json u-17", b"u-17") == NOT_SHOWN
    assert text_without_user_ids(b'["u-17"]', None) == NOT_SHOWN
    assert text_without_user_ids(None, b"u-17") == NOT_SHOWN


@given(st.text(min_size=1), st.dictionaries(st.text(), st.text()))
def test_no_user_id_survives(user_id: str, extra: dict[str, str]) -> None:
    value = {**{k: v + user_id for k, v in extra.items()}, "user_id": user_id}
    text = text_without_user_ids(orjson.dumps(value), user_id.encode())
    for key, item in orjson.loads(text).items():
        assert key == REDACTED or user_id not in key
        assert item == REDACTED or user_id not in item
