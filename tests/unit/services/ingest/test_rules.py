"""services.ingest.rules.process_raw: one behaviour per test, plus fuzzing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import rules
from services.ingest import validation as v
from services.ingest.rules import Rejected, Valid, process_raw
from shared.contract.keys import ip_ua_hash, keyed_ip_ua
from shared.contract.redaction import MAX_RAW_CHARS, redact_raw

ACCOUNT = "549755885175"
KEY = ACCOUNT.encode()
RECEIVED_MS = 1_764_151_200_000
KAFKA_TS_MS = 1_764_151_100_000
EVENT_TIME = 1_764_151_000
H1 = "a" * 64
EMAIL = "alice.smith@example.com"
PHONE = "+1 415-555-0100"
PHONE_DIGITS = "14155550100"
IP = "203.0.113.77"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
UA = "Mozilla/5.0 (SecretAgent 9.1)"
PLAINTEXTS = (EMAIL, PHONE, PHONE_DIGITS, IP, IPV6, UA)
MAX_BYTES = 100_000
IP_UA_KEY = "k" * 32


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": EVENT_TIME,
        "event_id": "ev-1",
        "user_data": {"em": [H1], "client_ip_address": IP, "client_user_agent": UA},
        "custom_data": {"currency": "usd", "value": "72.39"},
    }
    base.update(overrides)
    return base


def envelope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ad_account_id": ACCOUNT,
        "source": "api",
        "received_at_ms": RECEIVED_MS,
        "event": event(),
    }
    base.update(overrides)
    return base


def run(value: Any, key: bytes | None = KEY, max_bytes: int = MAX_BYTES) -> Valid | Rejected:
    raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
    return process_raw(
        raw,
        key,
        topic="conversions.raw",
        partition=3,
        offset=1234,
        timestamp_ms=KAFKA_TS_MS,
        max_bytes=max_bytes,
        identifier_key=IP_UA_KEY,
    )


def valid(value: Any, key: bytes | None = KEY) -> Valid:
    outcome = run(value, key)
    assert isinstance(outcome, Valid), outcome
    return outcome


def rejected(value: Any, key: bytes | None = KEY, max_bytes: int = MAX_BYTES) -> Rejected:
    outcome = run(value, key, max_bytes)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason in rules.ALL_REASONS
    return outcome


def assert_no_plaintext(outcome: Valid | Rejected) -> None:
    text = outcome.value.decode("utf-8", "replace")
    for secret in PLAINTEXTS:
        assert secret not in text, secret


# ---------------------------------------------------------------- valid output
def test_valid_record_becomes_the_design_message():
    out = valid(envelope())
    assert out.message == {
        "conversion_key": f"{ACCOUNT}:checkout:ev-1:online",
        "ad_account_id": ACCOUNT,
        "source": "api",
        "received_at_ms": RECEIVED_MS,
        "raw_ref": "conversions.raw:3:1234",
        "event_name": "checkout",
        "event_id": "ev-1",
        "action_source": "web",
        "event_time": EVENT_TIME,
        "scope": "online",
        "value": 72.39,
        "currency": "USD",
        "ids": {
            "click_id": None,
            "external_id": [],
            "em": [H1],
            "ph": [],
            "hashed_maids": [],
            "ip_ua": keyed_ip_ua(ip_ua_hash(IP, UA), IP_UA_KEY),
        },
        "opt_out": False,
        "ldp": False,
    }


def test_the_plain_ip_ua_hash_never_reaches_conversions_valid():
    """Inside the pipeline ip_ua is keyed: sha256(ip|ua) alone can be brute-forced."""
    out = valid(envelope())
    assert ip_ua_hash(IP, UA) not in out.value.decode()
    assert out.message["ids"]["ip_ua"] == keyed_ip_ua(ip_ua_hash(IP, UA), IP_UA_KEY)


def test_valid_value_is_the_message_as_json():
    out = valid(envelope())
    assert orjson.loads(out.value) == out.message


def test_valid_key_is_the_conversion_key():
    assert valid(envelope()).key == f"{ACCOUNT}:checkout:ev-1:online".encode()


def test_valid_output_holds_no_plaintext_identifier():
    assert_no_plaintext(valid(envelope()))


def test_offline_event_gets_offline_conversion_key():
    out = valid(envelope(event=event(action_source="offline")))
    assert out.key.endswith(b":offline")


def test_missing_source_means_topic():
    env = envelope()
    del env["source"]
    assert valid(env).source == "topic"


def test_null_source_means_topic():
    assert valid(envelope(source=None)).message["source"] == "topic"


@pytest.mark.parametrize("source", sorted(rules.SOURCES))
def test_every_source_is_accepted(source: str):
    assert valid(envelope(source=source)).source == source


def test_missing_received_at_means_kafka_timestamp():
    env = envelope()
    del env["received_at_ms"]
    assert valid(env).message["received_at_ms"] == KAFKA_TS_MS


def test_received_at_is_the_reference_for_event_time_limits():
    old = RECEIVED_MS // 1000 - 67 * 86400 - 10
    assert valid(envelope(received_at_ms=RECEIVED_MS - 60_000, event=event(event_time=old + 70)))
    assert rejected(envelope(event=event(event_time=old))).reason == v.EVENT_TIME_TOO_OLD


def test_ldp_and_opt_out_flags_reach_the_message():
    ev = event(opt_out=True, custom_data={"opt_out_type": "LDP"})
    message = valid(envelope(event=ev)).message
    assert (message["opt_out"], message["ldp"]) == (True, True)


# ---------------------------------------------------------------- record rules
def test_none_value_is_an_empty_record():
    out = rejected(None)
    assert out.reason == rules.EMPTY_RECORD
    assert out.record["raw"] == ""


def test_oversized_record_is_rejected():
    big = orjson.dumps(envelope(event=event(partner_name="x" * 5000)))
    assert rejected(big, max_bytes=1000).reason == rules.RECORD_TOO_LARGE


def test_oversized_record_raw_is_truncated():
    big = b'{"x": "' + b"y" * (MAX_RAW_CHARS * 10) + b'"}'
    out = rejected(big, max_bytes=1000)
    assert len(out.record["raw"]) < MAX_RAW_CHARS + 100
    assert "truncated" in out.record["raw"]


def test_large_valid_json_raw_is_truncated():
    out = rejected(
        envelope(
            event=event(
                event_id="", partner_name="p" * 8000, language="l" * 8000, app_name="a" * 8000
            )
        )
    )
    assert len(out.record["raw"]) < MAX_RAW_CHARS + 100


def test_non_json_is_rejected():
    assert rejected(b"not json").reason == rules.INVALID_JSON


def test_non_utf8_bytes_are_rejected_as_invalid_json():
    assert rejected(b'{"a": "\xff\xfe"}').reason == rules.INVALID_JSON


def test_non_utf8_bytes_never_reach_raw():
    raw = rejected(b'{"a": "\xff", "b": \xfe}').record["raw"]
    assert "xff" not in raw and "xfe" not in raw and '"a"' in raw
    raw.encode("utf-8")


def test_json_array_is_not_an_object():
    assert rejected(b"[1, 2]").reason == rules.NOT_AN_OBJECT


def test_unknown_envelope_field_is_rejected():
    assert rejected(envelope(recieved_at_ms=1)).reason == rules.UNKNOWN_ENVELOPE_FIELD


def test_invalid_source_is_rejected():
    assert rejected(envelope(source="email")).reason == rules.INVALID_SOURCE


def test_missing_ad_account_id_is_rejected():
    env = envelope()
    del env["ad_account_id"]
    assert rejected(env).reason == rules.INVALID_AD_ACCOUNT_ID


@pytest.mark.parametrize("bad", ["", "12a", "1" * 19, 549755885175, "٣٤٥", " 12"])
def test_bad_ad_account_id_is_rejected(bad: Any):
    assert rejected(envelope(ad_account_id=bad)).reason == rules.INVALID_AD_ACCOUNT_ID


def test_ad_account_id_of_18_digits_is_accepted():
    account = "1" * 18
    assert valid(envelope(ad_account_id=account), key=account.encode())


def test_key_different_from_ad_account_id_is_rejected():
    assert rejected(envelope(), key=b"999").reason == rules.KEY_MISMATCH


def test_missing_key_is_rejected():
    assert rejected(envelope(), key=None).reason == rules.KEY_MISMATCH


def test_non_integer_received_at_is_rejected():
    assert rejected(envelope(received_at_ms="1")).reason == rules.INVALID_RECEIVED_AT


def test_bool_received_at_is_rejected():
    assert rejected(envelope(received_at_ms=True)).reason == rules.INVALID_RECEIVED_AT


def test_missing_event_is_rejected():
    env = envelope()
    del env["event"]
    assert rejected(env).reason == rules.MISSING_EVENT


def test_event_rule_reason_reaches_the_dlq():
    out = rejected(envelope(event=event(event_name="purchase")))
    assert out.reason == v.INVALID_EVENT_NAME


def test_non_object_event_is_rejected():
    assert rejected(envelope(event=[1])).reason == v.EVENT_NOT_OBJECT


# ---------------------------------------------------------------- dlq record
def test_dlq_record_has_the_contract_shape():
    out = rejected(envelope(event=event(event_name="purchase")))
    assert set(out.record) == {
        "reason",
        "message",
        "source_topic",
        "partition",
        "offset",
        "ad_account_id",
        "raw",
    }
    assert (out.record["source_topic"], out.record["partition"], out.record["offset"]) == (
        "conversions.raw",
        3,
        1234,
    )
    assert orjson.loads(out.value) == out.record


def test_dlq_key_is_the_ad_account_id():
    out = rejected(envelope(event=event(event_name="purchase")))
    assert (out.key, out.record["ad_account_id"]) == (KEY, ACCOUNT)


def test_dlq_ad_account_id_falls_back_to_a_valid_key():
    out = rejected(b"junk", key=KEY)
    assert (out.key, out.record["ad_account_id"]) == (KEY, ACCOUNT)


def test_dlq_ad_account_id_is_null_when_unknown():
    out = rejected(b"junk", key=b"alice@example.com")
    assert (out.key, out.record["ad_account_id"]) == (None, None)


def test_rejected_source_is_the_envelope_source():
    assert rejected(envelope(source="tag", event=event(event_id=""))).source == "tag"


def test_rejected_source_is_unknown_without_envelope():
    assert rejected(b"junk").source == rules.UNKNOWN_SOURCE


# ---------------------------------------------------------------- redaction
def test_plaintext_email_in_em_is_redacted_from_dlq():
    ev = event(user_data={"em": [EMAIL], "client_ip_address": IP, "client_user_agent": UA})
    out = rejected(envelope(event=ev))
    assert out.reason == v.UNHASHED_IDENTIFIER
    assert_no_plaintext(out)


def test_valid_hash_is_kept_in_dlq_raw():
    ev = event(user_data={"em": [H1, EMAIL]})
    assert H1 in rejected(envelope(event=ev)).record["raw"]


def test_ip_and_user_agent_are_redacted_from_dlq():
    out = rejected(envelope(event=event(event_id="")))
    assert_no_plaintext(out)
    assert '"client_ip_address":"[redacted]"' in out.record["raw"]


def test_plaintext_phone_in_ph_is_redacted_from_dlq():
    ev = event(user_data={"em": [H1], "ph": [PHONE_DIGITS, PHONE]})
    assert_no_plaintext(rejected(envelope(event=ev)))


def test_phone_number_as_integer_in_ph_is_redacted_from_dlq():
    ev = event(user_data={"em": [H1], "ph": [int(PHONE_DIGITS)]})
    assert_no_plaintext(rejected(envelope(event=ev)))


def test_unknown_user_data_field_value_is_redacted_from_dlq():
    """An event rejected for another reason: its unknown user_data field's value is
    not dead-lettered."""
    ev = event(event_id="", user_data={"em": [H1], "full_name": "Alice Smith"})
    out = rejected(envelope(event=ev))
    assert "Alice Smith" not in out.value.decode()


def test_an_unknown_user_data_field_is_ignored_and_never_sent_on():
    ev = event(user_data={"em": [H1], "full_name": "Alice Smith"})
    out = valid(envelope(event=ev))
    assert "Alice Smith" not in out.value.decode()
    assert "full_name" not in out.value.decode()


def test_email_anywhere_is_redacted_from_dlq():
    ev = event(event_id="", partner_name=f"contact {EMAIL} now")
    assert_no_plaintext(rejected(envelope(event=ev)))


def test_email_as_a_field_name_is_redacted_from_dlq():
    ev = event(**{EMAIL: 1})
    assert_no_plaintext(rejected(envelope(event=ev)))


def test_phone_and_ip_in_free_text_are_redacted_from_dlq():
    ev = event(event_id="", custom_data={"search_string": f"{PHONE} {IP} {IPV6}"})
    assert_no_plaintext(rejected(envelope(event=ev)))


def test_ids_and_times_survive_redaction():
    out = rejected(envelope(event=event(event_name="purchase", event_id="4155550100123")))
    raw = orjson.loads(out.record["raw"])
    assert raw["ad_account_id"] == ACCOUNT
    assert raw["received_at_ms"] == RECEIVED_MS
    assert raw["event"]["event_time"] == EVENT_TIME
    assert raw["event"]["event_id"] == "4155550100123"


def test_invalid_json_is_redacted_by_pattern():
    text = orjson.dumps(envelope(event=event(event_id="")))[:-3] + PHONE.encode()
    out = rejected(text)
    assert out.reason == rules.INVALID_JSON
    assert_no_plaintext(out)


def test_invalid_json_with_plaintext_hashed_fields_is_redacted():
    text = (
        f'{{"user_data": {{"em": ["{EMAIL}", "{H1}"], "ph": {PHONE_DIGITS},'
        f' "client_user_agent": "{UA}"'
    ).encode()
    out = rejected(text)
    assert_no_plaintext(out)
    assert H1 in out.record["raw"]


def test_invalid_json_keeps_ad_account_id_and_times():
    text = orjson.dumps(envelope())[:-2]
    raw = rejected(text).record["raw"]
    assert ACCOUNT in raw
    assert str(RECEIVED_MS) in raw


def test_non_utf8_record_with_email_is_redacted():
    out = rejected(b"\xff\xfe" + EMAIL.encode() + b" " + IP.encode())
    assert_no_plaintext(out)


def test_oversized_record_is_redacted():
    text = orjson.dumps(envelope(event=event(partner_name="x" * 5000)))
    assert_no_plaintext(rejected(text, max_bytes=1000))


def test_oversized_record_with_identifier_at_the_cut_is_redacted():
    padding = b'{"pad": "' + b"x" * (MAX_RAW_CHARS - 20) + b'", "e": "'
    out = rejected(padding + EMAIL.encode() + b'"}' + b" " * 100_000, max_bytes=1000)
    assert_no_plaintext(out)


def test_redact_raw_of_none_is_empty():
    assert redact_raw(None) == ""


def test_deeply_nested_json_never_raises():
    deep = b"[" * 5000 + b"]" * 5000
    assert isinstance(run(deep), Rejected)


def test_every_reason_code_is_documented():
    with open("docs/reason-codes.md", encoding="utf-8") as doc:
        text = doc.read()
    for reason in rules.ALL_REASONS:
        assert f"`{reason}`" in text, reason


# ---------------------------------------------------------------- fuzzing
def check_outcome(outcome: Any) -> None:
    assert type(outcome) in (Valid, Rejected)
    decoded = orjson.loads(outcome.value)
    if type(outcome) is Valid:
        assert decoded == outcome.message
        assert outcome.key == decoded["conversion_key"].encode()
    else:
        assert outcome.reason in rules.ALL_REASONS
        assert decoded == outcome.record
        assert isinstance(decoded["raw"], str)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=2000)), key=st.none() | st.binary(max_size=30))
def test_fuzz_arbitrary_bytes_never_raise(value: bytes | None, key: bytes | None):
    check_outcome(
        process_raw(
            value,
            key,
            topic="t",
            partition=0,
            offset=0,
            timestamp_ms=KAFKA_TS_MS,
            max_bytes=1000,
            identifier_key=IP_UA_KEY,
        )
    )


@settings(max_examples=500, deadline=None)
@given(doc=json_values)
def test_fuzz_arbitrary_json_never_raises(doc: Any):
    check_outcome(run(orjson.dumps(doc)))


event_fields = st.sampled_from(
    [
        "event_name",
        "action_source",
        "event_time",
        "event_id",
        "user_data",
        "custom_data",
        "opt_out",
        "partner_name",
        "app_info",
        "bogus",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    changes=st.dictionaries(event_fields, json_values, max_size=4),
    user=st.dictionaries(
        st.sampled_from(
            sorted(v.HASHED_FIELDS | {"client_ip_address", "client_user_agent", "click_id", "x"})
        ),
        json_values,
        max_size=4,
    ),
    env_changes=st.dictionaries(
        st.sampled_from(["ad_account_id", "source", "received_at_ms", "other"]),
        json_values,
        max_size=2,
    ),
    timestamp_ms=st.none() | st.integers(min_value=0, max_value=2**62),
)
def test_fuzz_envelopes_near_valid_never_raise(
    changes: dict[str, Any],
    user: dict[str, Any],
    env_changes: dict[str, Any],
    timestamp_ms: int | None,
):
    ev = event(**changes)
    if user:
        ev["user_data"] = user
    doc = envelope(event=ev, **env_changes)
    outcome = process_raw(
        orjson.dumps(doc),
        KEY,
        topic="t",
        partition=1,
        offset=2,
        timestamp_ms=timestamp_ms,
        max_bytes=MAX_BYTES,
        identifier_key=IP_UA_KEY,
    )
    check_outcome(outcome)
    if type(outcome) is Rejected:
        raw = outcome.record["raw"]
        for field in ("client_ip_address", "client_user_agent"):
            value = user.get(field)
            if isinstance(value, str) and len(value) > 3 and value not in ("[redacted]",):
                assert f'"{field}":"[redacted]"' in raw or field not in raw


# ---------------------------------------------------------------- nesting orjson cannot write


def _deep_envelope(field: str) -> bytes:
    """An envelope whose event holds ``field`` nested 300 objects deep.

    orjson reads 1,024 levels but writes only ~255: nothing of such an event may
    need writing back whole.
    """
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    head = orjson.dumps(envelope(event=event(action_source="app_ios")))[:-2]
    return head + b', "' + field.encode() + b'": ' + deep + b"}}"


def test_a_deeply_nested_app_info_is_rejected_with_a_writable_record():
    """app_info takes known scalar fields only: a deep one is one writable reject."""
    out = rejected(_deep_envelope("app_info"))
    assert orjson.loads(out.value)["reason"] == "unknown_field"


def test_a_deeply_nested_reject_is_dead_lettered_with_a_writable_record():
    out = rejected(_deep_envelope("bogus"))
    assert out.reason == "unknown_field"
    assert orjson.loads(out.value)["reason"] == "unknown_field"
