"""shared.contract.dead_letters / redaction: the one DLQ builder redacts by allow-list."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contract.dead_letters import dead_letter, dead_letter_of_record
from shared.contract.redaction import KNOWN_FIELDS, MAX_RAW_CHARS, REDACTED, redact_raw

H1 = "a" * 64
ACCOUNT = "549755885175"


def raw_of(value: Any) -> str:
    data = value if isinstance(value, bytes) else orjson.dumps(value)
    return dead_letter_of_record("r", "m", source_topic="t", partition=0, offset=0, raw=data)["raw"]


def test_the_record_has_the_contract_shape():
    record = dead_letter(
        "bad", "text", source_topic="t", partition=2, offset=9, raw=b"{}", ad_account_id="1"
    )
    assert record == {
        "reason": "bad",
        "message": "text",
        "source_topic": "t",
        "partition": 2,
        "offset": 9,
        "ad_account_id": "1",
        "raw": "{}",
    }


def test_a_record_s_own_ad_account_id_is_reported():
    record = dead_letter_of_record(
        "r", "m", source_topic="t", partition=0, offset=0, raw=orjson.dumps({"ad_account_id": "42"})
    )
    assert record["ad_account_id"] == "42"


def test_an_invalid_ad_account_id_is_not_reported():
    record = dead_letter_of_record(
        "r", "m", source_topic="t", partition=0, offset=0, raw=b'{"ad_account_id": "42\\n"}'
    )
    assert record["ad_account_id"] is None


def test_user_click_and_partner_ids_are_redacted():
    raw = raw_of({"user_id": "u-17", "click_id": "epik-x", "partner_id": "p-9"})
    assert orjson.loads(raw) == dict.fromkeys(("user_id", "click_id", "partner_id"), REDACTED)


def test_an_engagement_keeps_its_facts_but_never_its_user_id():
    engagement = {
        "engagement_id": "e-81",
        "user_id": "u-17",
        "ad_account_id": ACCOUNT,
        "campaign_id": "c-3",
        "ad_group_id": "g-9",
        "ad_id": "a-44",
        "type": "click",
        "ts_ms": 1_764_150_000_000,
        "click_id": "epik-string",
    }
    kept = orjson.loads(raw_of(engagement))
    assert kept == {**engagement, "user_id": REDACTED, "click_id": REDACTED}


def test_a_privacy_request_never_shows_its_user_id():
    raw = raw_of({"request_id": "r-1", "user_id": "jane.doe", "kind": "delete", "ts_ms": 5})
    assert "jane.doe" not in raw and '"kind":"delete"' in raw


def test_an_integer_user_id_is_redacted():
    assert "17" not in raw_of({"user_id": 17})


def test_a_forget_user_assignment_never_shows_its_user_id():
    raw = raw_of(
        {"op": "forget_user", "conversion_key": f"{ACCOUNT}:lead:ev-1:online", "user_id": "u-5"}
    )
    assert "u-5" not in raw and f"{ACCOUNT}:lead:ev-1:online" in raw


def test_hashes_are_kept_and_other_values_of_hashed_fields_are_not():
    raw = orjson.loads(raw_of({"em": [H1, "alice@example.com"], "key": H1}))
    assert raw == {"em": [H1, REDACTED], "key": H1}


def test_values_that_do_not_fit_their_field_are_redacted():
    raw = orjson.loads(
        raw_of(
            {
                "event_name": "alice@example.com",
                "ad_account_id": "123\n",
                "event_id": "10.0.0.1",
                "campaign_id": "415-555-0100",
                "currency": "Mozilla/5.0",
                "ts_ms": "1764150000000",
            }
        )
    )
    assert set(raw.values()) == {REDACTED}


def test_unknown_field_names_that_look_like_identifiers_are_redacted():
    raw = raw_of({"alice@example.com": 1, "+14155550100": 2, "note": "hi", "jörg": 3})
    assert "alice" not in raw and "4155550100" not in raw and "jörg" not in raw
    assert '"note":"[redacted]"' in raw


def test_escaped_field_names_in_unparsed_text_are_recognised():
    text = (
        rb'{"client_user_agen\u0074": "Mozilla/5.0 (X11)", "f\u006e": ["Alice"],'
        rb' "event_name": "lead"'
    )
    raw = redact_raw(text)
    assert "Mozilla" not in raw and "Alice" not in raw
    assert '"client_user_agent": "[redacted]"' in raw and '"event_name": "lead"' in raw


def test_click_and_partner_ids_in_unparsed_text_are_redacted():
    raw = redact_raw(b'{"click_id": "dj0yJnU9", "partner_id": "p-77", "ts_ms": 17641')
    assert "dj0yJnU9" not in raw and "p-77" not in raw and "17641" in raw


def test_non_ascii_email_is_redacted_whole():
    raw = redact_raw('{"note": "jörg.müller@beispiel.de" '.encode())
    assert "jörg" not in raw and "beispiel" not in raw and "müller" not in raw


def test_bare_words_and_undecodable_bytes_are_redacted():
    raw = redact_raw(b"\xff\xfe alice@example.com 10.0.0.1 Mozilla/5.0")
    assert set(raw.split()) == {REDACTED}


def test_a_long_value_is_truncated():
    raw = raw_of(b"[" + b'"x", ' * MAX_RAW_CHARS + b"1")
    assert len(raw) < MAX_RAW_CHARS + 100 and raw.endswith("bytes]")


def test_deep_json_is_redacted_without_error():
    raw = raw_of(b"[" * 5000 + b"]" * 5000)
    assert isinstance(raw, str)


# ---------------------------------------------------------------- property tests
_LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüéñ._-", min_size=2, max_size=12).filter(
    lambda s: s[0].isalpha()
)
_DOMAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüß", min_size=2, max_size=10)
EMAILS = st.builds(
    lambda local, d, t: f"{local}@{d}.{t}", _LOCAL, _DOMAIN, st.sampled_from(["com", "de", "co.uk"])
)
PHONES = st.builds(
    lambda a, b, c, form: form.format(a=a, b=b, c=c),
    st.integers(200, 999),
    st.integers(200, 999),
    st.integers(1000, 9999),
    st.sampled_from(
        ["+1{a}{b}{c}", "+1 {a} {b} {c}", "({a}) {b}-{c}", "{a}-{b}-{c}", "{a}.{b}.{c}"]
    ),
)
IPV4 = st.ip_addresses(v=4).map(str).filter(lambda s: s.count(".") == 3 and len(s) >= 9)
IPV6 = st.ip_addresses(v=6).map(lambda ip: ip.exploded)
USER_AGENTS = st.builds(
    lambda v, os: f"Mozilla/5.0 ({os}) AppleWebKit/{v}.36 Chrome/{v}.0",
    st.integers(100, 999),
    st.sampled_from(["X11; Linux x86_64", "iPhone; CPU iPhone OS 17_1", "Windows NT 10.0"]),
)
USER_IDS = st.from_regex(r"u-[a-z0-9]{6,10}", fullmatch=True)
CLICK_IDS = st.from_regex(r"epik-[A-Za-z0-9]{8,16}", fullmatch=True)
PLANTED = st.one_of(EMAILS, PHONES, IPV4, IPV6, USER_AGENTS, USER_IDS, CLICK_IDS)

_ALLOWED_VALUE_FIELDS = {"event_name", "event_id", "ad_account_id", "campaign_id", "ts_ms", "value"}
_IDENTIFIER_KEYS = st.sampled_from(
    [
        "user_id",
        "click_id",
        "partner_id",
        "em",
        "ph",
        "client_ip_address",
        "client_user_agent",
        "fn",
    ]
)
_OTHER_KEYS = st.text(max_size=12).filter(lambda k: k not in KNOWN_FIELDS)
_FILLER = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_OTHER_KEYS, children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def documents_with_plants(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A JSON document with identifiers planted as values, in lists, as names, in text."""
    doc: dict[str, Any] = draw(st.dictionaries(_OTHER_KEYS, _FILLER, max_size=4))
    doc.update(
        {
            "event_name": "checkout",
            "event_id": "ev-1",
            "ad_account_id": ACCOUNT,
            "ts_ms": 1_764_150_000_000,
        }
    )
    planted = draw(st.lists(PLANTED, min_size=1, max_size=5))
    for value in planted:
        where = draw(st.sampled_from(["identifier", "other", "list", "name", "text", "nested"]))
        if where == "identifier":
            doc[draw(_IDENTIFIER_KEYS)] = value
        elif where == "other":
            doc[draw(_OTHER_KEYS)] = value
        elif where == "list":
            doc.setdefault("items", []).append(value)
        elif where == "name":
            doc[value] = 1
        elif where == "text":
            doc[draw(_OTHER_KEYS)] = f"contact {value} today"
        else:
            doc["user_data"] = {draw(_IDENTIFIER_KEYS): [value], "nested": {"x": value}}
    return doc, planted


def assert_gone(raw: str, planted: list[str]) -> None:
    for value in planted:
        assert value not in raw, value


@settings(max_examples=300, deadline=None)
@given(case=documents_with_plants())
def test_planted_identifiers_never_survive_in_json(case: tuple[Any, list[str]]):
    doc, planted = case
    raw = raw_of(doc)
    assert_gone(raw, planted)
    kept = orjson.loads(raw)
    assert kept["event_name"] == "checkout" and kept["ad_account_id"] == ACCOUNT


@settings(max_examples=300, deadline=None)
@given(
    case=documents_with_plants(),
    cut=st.integers(min_value=1, max_value=400),
    junk=st.binary(max_size=8),
    escape=st.booleans(),
)
def test_planted_identifiers_never_survive_in_broken_text(
    case: tuple[Any, list[str]], cut: int, junk: bytes, escape: bool
):
    doc, planted = case
    data = orjson.dumps(doc)
    if escape:  # field names written with JSON escapes
        data = data.replace(b'"user_id"', b'"user_i\\u0064"').replace(b'"em"', b'"\\u0065m"')
    broken = junk + data[: max(len(data) - cut, 0)] + junk
    raw = redact_raw(broken)
    for value in planted:
        # A value cut by the truncation may leave a prefix only: nothing of it is kept.
        assert value not in raw, value
    raw.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(PLANTED | st.text(max_size=10), min_size=1, max_size=8),
    sep=st.sampled_from([" ", ", ", "\n", "|"]),
)
def test_planted_identifiers_never_survive_in_free_text(words: list[str], sep: str):
    raw = redact_raw(sep.join(words).encode("utf-8", "surrogatepass"))
    for word in words:
        if len(word) >= 6 and any(c.isdigit() or c in "@/." for c in word):
            assert word not in raw, word
