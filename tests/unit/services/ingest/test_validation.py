"""services.ingest.validation: one behaviour per test."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from services.ingest import validation as v
from services.ingest.validation import NormalisedEvent, validate_event
from shared.contract.errors import InvalidEvent
from shared.contract.keys import internal_click, ip_ua_hash, keyed_ip_ua
from tests.unit.services.ingest.factories import event

RECEIVED_MS = 1_764_151_200_000
EVENT_TIME = 1_764_151_000
H1 = "a" * 64
H2 = "b" * 64
IP = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
EMAIL = "alice.smith@example.com"
IP_UA_KEY = "k" * 32


def ok(ev: Any) -> NormalisedEvent:
    return validate_event(ev, received_at_ms=RECEIVED_MS, identifier_key=IP_UA_KEY)


def reject(ev: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        validate_event(ev, received_at_ms=RECEIVED_MS, identifier_key=IP_UA_KEY)
    assert info.value.reason in v.EVENT_REASONS
    return info.value


def user(**fields: Any) -> dict[str, Any]:
    return event(user_data=fields)


def custom(**fields: Any) -> dict[str, Any]:
    return event(custom_data=fields)


# ---------------------------------------------------------------- accepted shapes
def test_minimal_event_is_accepted():
    result = ok(event())
    assert result.event_name == "checkout"
    assert result.event_id == "ev-1"
    assert result.event_time == EVENT_TIME


def test_every_event_name_is_accepted():
    for name in v.EVENT_NAMES:
        assert ok(event(event_name=name)).event_name == name


def test_every_action_source_is_accepted():
    for source in v.ACTION_SOURCES:
        assert ok(event(action_source=source)).action_source == source


def test_explicit_nulls_for_every_optional_event_field_are_accepted():
    nulls = {f: None for f in [*v._EVENT_STRINGS, *v._EVENT_BOOLS, *v.INFO_FIELDS]}
    ok(event(custom_data=None, **nulls))


def test_explicit_nulls_in_user_data_are_accepted():
    fields: dict[str, Any] = {f: None for f in [*v.HASHED_FIELDS, *v._USER_STRINGS]}
    fields["em"] = [H1]
    ok(user(**fields))


def test_explicit_nulls_in_custom_data_are_accepted():
    ok(custom(**{f: None for f in v._CUSTOM_FIELDS}))


def test_explicit_nulls_in_contents_items_are_accepted():
    ok(custom(contents=[{f: None for f in v._CONTENT_FIELDS}]))


def test_empty_custom_data_is_accepted():
    result = ok(event(custom_data={}))
    assert (result.value, result.currency, result.ldp) == (None, None, False)


def test_full_sdk_like_event_is_accepted():
    ev = event(
        event_source_url="https://shop.example/checkout",
        partner_name="ss-shopify",
        language="en",
        opt_out=False,
        wifi=True,
        app_id="123",
        app_name="Shop",
        app_version="1.2",
        device_brand="Apple",
        device_carrier="T",
        device_model="iPhone",
        device_type="phone",
        os_version="17",
        app_info={"app_id": "123", "app_name": "Shop", "app_version": None},
        device_info={"device_model": "iPhone", "os_version": "17", "wifi": True},
        user_data={
            "em": [H1],
            "ph": [H2],
            "ge": [H1],
            "db": [H1],
            "ln": [H1],
            "fn": [H1],
            "ct": [H1],
            "st": [H1],
            "zp": [H1],
            "country": [H1],
            "external_id": [H2],
            "hashed_maids": [H1],
            "client_ip_address": IP,
            "client_user_agent": UA,
            "click_id": "dj0yJnU9",
            "partner_id": "p-1",
        },
        custom_data={
            "currency": "USD",
            "value": "72.39",
            "content_ids": ["sku-1"],
            "content_name": "n",
            "content_category": "c",
            "content_brand": "b",
            "contents": [
                {
                    "id": "sku-1",
                    "item_price": "10.00",
                    "quantity": 2,
                    "item_name": "x",
                    "item_category": "y",
                    "item_brand": "z",
                }
            ],
            "num_items": 2,
            "order_id": "o-1",
            "search_string": "shoes",
            "opt_out_type": "",
            "np": "ss-shopify",
            "predicted_ltv": "100",
            "external_measurement_id": "m",
            "external_measurement_vendor_id": "mv",
        },
    )
    assert ok(ev).value == 72.39


def test_validate_event_does_not_mutate_its_input():
    ev = user(em=[H1.upper()], client_ip_address=IP, client_user_agent=UA)
    before = copy.deepcopy(ev)
    ok(ev)
    assert ev == before


# ---------------------------------------------------------------- event object
def test_non_object_event_is_rejected():
    for bad in (None, [], "x", 1, True):
        assert reject(bad).reason == v.EVENT_NOT_OBJECT


@pytest.mark.parametrize("field", ["event_name", "action_source", "event_time", "event_id"])
def test_missing_required_field_is_rejected(field: str):
    ev = event()
    del ev[field]
    err = reject(ev)
    assert err.reason == v.MISSING_REQUIRED_FIELD
    assert field in err.message


def test_missing_user_data_is_rejected():
    ev = event()
    del ev["user_data"]
    assert reject(ev).reason == v.MISSING_REQUIRED_FIELD


def test_null_required_field_is_rejected_as_missing():
    assert reject(event(event_id=None)).reason == v.MISSING_REQUIRED_FIELD


def test_unknown_event_field_is_rejected():
    err = reject(event(colour="blue"))
    assert err.reason == v.UNKNOWN_FIELD
    assert "'colour'" in err.message


def test_unknown_field_whose_name_is_an_email_is_not_echoed():
    err = reject(event(**{EMAIL: "x"}))
    assert err.reason == v.UNKNOWN_FIELD
    assert EMAIL not in err.message


def test_unknown_event_name_is_rejected():
    assert reject(event(event_name="purchase")).reason == v.INVALID_EVENT_NAME


def test_event_name_is_case_sensitive():
    assert reject(event(event_name="Checkout")).reason == v.INVALID_EVENT_NAME


def test_non_string_event_name_is_rejected():
    assert reject(event(event_name=1)).reason == v.INVALID_EVENT_NAME


def test_unknown_action_source_is_rejected():
    assert reject(event(action_source="email")).reason == v.INVALID_ACTION_SOURCE


def test_string_event_time_is_rejected():
    assert reject(event(event_time=str(EVENT_TIME))).reason == v.INVALID_EVENT_TIME


def test_float_event_time_is_rejected():
    assert reject(event(event_time=float(EVENT_TIME))).reason == v.INVALID_EVENT_TIME


def test_bool_event_time_is_rejected():
    assert reject(event(event_time=True)).reason == v.INVALID_EVENT_TIME


def test_millisecond_event_time_is_rejected():
    err = reject(event(event_time=EVENT_TIME * 1000))
    assert err.reason == v.EVENT_TIME_IN_MILLISECONDS
    assert "seconds" in err.message


def test_event_time_one_hour_ahead_is_accepted():
    ok(event(event_time=RECEIVED_MS // 1000 + 3600))


def test_event_time_more_than_one_hour_ahead_is_rejected():
    err = reject(event(event_time=RECEIVED_MS // 1000 + 3601))
    assert err.reason == v.EVENT_TIME_IN_FUTURE


def test_event_time_67_days_old_is_accepted():
    ok(event(event_time=RECEIVED_MS // 1000 - 67 * 86400))


def test_event_time_more_than_67_days_old_is_rejected():
    err = reject(event(event_time=RECEIVED_MS // 1000 - 67 * 86400 - 1))
    assert err.reason == v.EVENT_TIME_TOO_OLD


def test_negative_event_time_is_rejected_as_too_old():
    assert reject(event(event_time=-1)).reason == v.EVENT_TIME_TOO_OLD


def test_empty_event_id_is_rejected():
    assert reject(event(event_id="")).reason == v.INVALID_EVENT_ID


def test_blank_event_id_is_rejected():
    assert reject(event(event_id="   ")).reason == v.INVALID_EVENT_ID


def test_too_long_event_id_is_rejected():
    assert reject(event(event_id="x" * (v.MAX_EVENT_ID_CHARS + 1))).reason == v.INVALID_EVENT_ID


def test_event_id_at_the_length_limit_is_accepted():
    ok(event(event_id="x" * v.MAX_EVENT_ID_CHARS))


def test_non_string_event_id_is_rejected():
    assert reject(event(event_id=17)).reason == v.INVALID_FIELD_TYPE


def test_non_string_optional_event_field_is_rejected():
    assert reject(event(event_source_url=5)).reason == v.INVALID_FIELD_TYPE


def test_too_long_optional_string_is_rejected():
    long_url = "x" * (v.MAX_STRING_CHARS + 1)
    assert reject(event(event_source_url=long_url)).reason == v.FIELD_TOO_LONG


def test_non_bool_opt_out_is_rejected():
    assert reject(event(opt_out="yes")).reason == v.INVALID_FIELD_TYPE


def test_integer_one_is_not_a_bool():
    assert reject(event(wifi=1)).reason == v.INVALID_FIELD_TYPE


def test_non_object_app_info_is_rejected():
    assert reject(event(app_info="x")).reason == v.INVALID_FIELD_TYPE


@pytest.mark.parametrize("field", ["app_info", "device_info"])
def test_unknown_field_in_an_info_object_is_rejected(field: str):
    err = reject(event(**{field: {"email": EMAIL}}))
    assert err.reason == v.UNKNOWN_FIELD and EMAIL not in err.message


@pytest.mark.parametrize(
    ("field", "name"), [("app_info", "app_name"), ("device_info", "device_model")]
)
def test_nested_object_in_an_info_object_is_rejected(field: str, name: str):
    assert reject(event(**{field: {name: {"user": EMAIL}}})).reason == v.INVALID_FIELD_TYPE


def test_array_in_an_info_object_is_rejected():
    assert reject(event(device_info={"os_version": ["17"]})).reason == v.INVALID_FIELD_TYPE


def test_too_long_info_string_is_rejected():
    long = "x" * (v.MAX_INFO_CHARS + 1)
    assert reject(event(app_info={"app_name": long})).reason == v.FIELD_TOO_LONG


def test_non_bool_wifi_in_device_info_is_rejected():
    assert reject(event(device_info={"wifi": "yes"})).reason == v.INVALID_FIELD_TYPE


def test_pinterests_structured_info_fields_are_accepted():
    """The fields of Pinterest's ConversionEventAppInfo / ConversionEventDeviceInfo."""
    ok(
        event(
            app_info={
                "app_id": "429047995",
                "app_name": "Shop",
                "app_package_name": "com.shop.app",
                "app_store": "app_store",
                "app_version": "1.2",
                "install_time": 1_700_000_000,
                "user_agent": "Mozilla/5.0 " + "x" * 1_000,
                "window_height": 2532,
                "window_width": 1170,
            },
            device_info={
                "battery_level": 80,
                "brand": "Apple",
                "carrier": "T",
                "cpu_cores": 6,
                "external_storage_free_space": 0,
                "external_storage_size": 0,
                "form_factor": "phone",
                "kernel_version": "23.1.0",
                "languages": ["en-US", "fr-FR"],
                "locale": "en_US",
                "model": "iPhone14,2",
                "network_type": "wifi",
                "os_family": "ios",
                "os_name": "iOS",
                "os_release_name": "Sonoma",
                "os_version": "17.1",
                "screen_density": 3,
                "screen_height": 2532,
                "screen_width": 1170,
                "storage_free_space": 1_000_000,
                "storage_size": 128_000_000_000,
                "timezone": "America/New_York",
                "timezone_abbr": "EST",
                "type": "phone",
            },
        )
    )


@pytest.mark.parametrize(
    "info",
    [
        {"app_info": {"install_time": "1700000000"}},
        {"app_info": {"window_width": True}},
        {"device_info": {"languages": "en-US"}},
        {"device_info": {"languages": [{"lang": EMAIL}]}},
        {"device_info": {"screen_height": 1.5}},
    ],
)
def test_an_info_field_of_the_wrong_kind_is_rejected(info: dict):
    err = reject(event(**info))
    assert err.reason == v.INVALID_FIELD_TYPE and EMAIL not in err.message


def test_info_strings_and_arrays_are_bounded():
    assert reject(event(device_info={"languages": ["en"] * 101})).reason == v.FIELD_TOO_LONG
    long_ua = "x" * (v.MAX_STRING_CHARS + 1)
    assert reject(event(app_info={"user_agent": long_ua})).reason == v.FIELD_TOO_LONG


@pytest.mark.parametrize("vendor", ["mv", 12345, None])
def test_the_measurement_vendor_id_is_a_string_or_an_integer(vendor: object):
    """An integer since Pinterest's v5 schema typed it so; a string as before."""
    ok(custom(external_measurement_vendor_id=vendor))


@pytest.mark.parametrize("vendor", [1.5, True, ["mv"]])
def test_the_measurement_vendor_id_of_another_type_is_rejected(vendor: object):
    assert reject(custom(external_measurement_vendor_id=vendor)).reason == v.INVALID_FIELD_TYPE


def test_documented_info_fields_are_accepted():
    ok(
        event(
            app_info={"app_id": "com.shop", "app_name": "Shop", "app_version": "1.2"},
            device_info={
                "device_brand": "Apple",
                "device_carrier": "T",
                "device_model": "iPhone14,2",
                "device_type": "phone",
                "os_version": "17.1",
                "wifi": False,
            },
        )
    )


@pytest.mark.parametrize(
    "event_id",
    [
        EMAIL,
        "ALICE@EXAMPLE.COM",
        "order for alice@example.com",
        "jörg.müller@beispiel.de",
        "山田@例え.jp",
        "alice%40example.com",
        "+14155550100",
        "+1 415 555 0100",
        "+44 (20) 7946-0958",
        "(415) 555-0100",
        "415-555-0100",
        "415.555.0100",
        "415 555 0100",
    ],
)
def test_a_plaintext_identifier_as_event_id_is_rejected(event_id: str):
    err = reject(event(event_id=event_id))
    assert err.reason == v.IDENTIFIER_IN_EVENT_ID
    assert event_id not in err.message


@pytest.mark.parametrize(
    "event_id",
    ["ev-1", "4155550100123", "order-2024-11-26-0001", "2024-11-26", "a@b", "uuid-1f2e", "1.2.3"],
)
def test_order_numbers_and_ids_are_accepted_as_event_id(event_id: str):
    assert ok(event(event_id=event_id)).event_id == event_id


# ---------------------------------------------------------------- user_data
def test_non_object_user_data_is_rejected():
    assert reject(event(user_data=[H1])).reason == v.INVALID_FIELD_TYPE


def test_unknown_user_data_field_is_ignored():
    """The spec forbids unknown fields elsewhere, not in user_data: let through, unread."""
    assert ok(user(em=[H1], full_name="Alice Smith")).ids == ok(user(em=[H1])).ids


def test_unknown_user_data_fields_are_left_out_of_the_published_form():
    ev = user(em=[H1], full_name="Alice Smith")
    published = v.published_form(ev)
    assert published["user_data"] == {"em": [H1]}
    assert ev["user_data"]["full_name"] == "Alice Smith"  # the caller's event is untouched
    assert v.published_form(user(em=[H1])) == user(em=[H1])


def test_user_data_without_identifiers_is_rejected():
    assert reject(user(ph=[H1])).reason == v.MISSING_USER_IDENTIFIERS


def test_empty_user_data_is_rejected():
    assert reject(user()).reason == v.MISSING_USER_IDENTIFIERS


def test_empty_em_array_does_not_count_as_an_identifier():
    assert reject(user(em=[])).reason == v.MISSING_USER_IDENTIFIERS


def test_hashed_maids_alone_are_enough():
    assert ok(user(hashed_maids=[H1])).ids["hashed_maids"] == [H1]


def test_ip_and_user_agent_together_are_enough():
    assert ok(user(client_ip_address=IP, client_user_agent=UA)).ids["ip_ua"] is not None


def test_ip_without_user_agent_is_not_enough():
    assert reject(user(client_ip_address=IP)).reason == v.MISSING_USER_IDENTIFIERS


def test_user_agent_without_ip_is_not_enough():
    assert reject(user(client_user_agent=UA)).reason == v.MISSING_USER_IDENTIFIERS


def test_ipv6_address_is_accepted():
    ok(user(client_ip_address="2001:db8::1", client_user_agent=UA))


def test_invalid_ip_address_is_rejected_without_echoing_it():
    err = reject(user(client_ip_address="not-an-ip", client_user_agent=UA))
    assert err.reason == v.INVALID_CLIENT_IP_ADDRESS
    assert "not-an-ip" not in err.message


def test_plaintext_email_in_em_is_rejected_as_unhashed():
    err = reject(user(em=[EMAIL]))
    assert err.reason == v.UNHASHED_IDENTIFIER
    assert "hashed" in err.message


def test_unhashed_message_never_contains_the_value():
    err = reject(user(em=[H1, EMAIL]))
    assert EMAIL not in err.message
    assert EMAIL not in str(err)


def test_plaintext_phone_in_ph_is_rejected_as_unhashed():
    assert reject(user(em=[H1], ph=["+14155550100"])).reason == v.UNHASHED_IDENTIFIER


def test_number_in_hashed_field_is_rejected_as_unhashed():
    assert reject(user(em=[H1], ph=[14155550100])).reason == v.UNHASHED_IDENTIFIER


def test_63_hex_characters_is_not_a_hash():
    assert reject(user(em=["a" * 63])).reason == v.UNHASHED_IDENTIFIER


def test_non_hex_64_characters_is_not_a_hash():
    assert reject(user(em=["g" * 64])).reason == v.UNHASHED_IDENTIFIER


def test_hashed_field_as_a_bare_string_is_rejected():
    assert reject(user(em=H1)).reason == v.INVALID_FIELD_TYPE


def test_a_bare_plaintext_string_in_a_hashed_field_is_told_to_be_hashed():
    """Not only "must be an array": the spec's message for plaintext, without the value."""
    err = reject(user(em=EMAIL))
    assert err.reason == v.UNHASHED_IDENTIFIER
    assert "must be hashed" in err.message and EMAIL not in err.message


def test_too_many_hashes_are_rejected():
    assert reject(user(em=[H1] * (v.MAX_HASHES + 1))).reason == v.TOO_MANY_ITEMS


def test_non_string_click_id_is_rejected():
    assert reject(user(em=[H1], click_id=5)).reason == v.INVALID_FIELD_TYPE


# ---------------------------------------------------------------- custom_data
def test_non_object_custom_data_is_rejected():
    assert reject(event(custom_data="x")).reason == v.INVALID_FIELD_TYPE


def test_unknown_custom_data_field_is_rejected():
    assert reject(custom(price="1")).reason == v.UNKNOWN_FIELD


def test_unknown_custom_data_field_with_null_is_rejected():
    assert reject(custom(price=None)).reason == v.UNKNOWN_FIELD


def test_numeric_value_is_rejected():
    err = reject(custom(value=72.39))
    assert err.reason == v.INVALID_VALUE
    assert "string" in err.message


def test_non_string_currency_is_rejected():
    assert reject(custom(currency=840)).reason == v.INVALID_CURRENCY


def test_non_decimal_value_is_rejected():
    assert reject(custom(value="72,39")).reason == v.INVALID_VALUE


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", "1e400", "", " ", "0x10", "1_000"])
def test_non_finite_or_non_decimal_value_is_rejected(bad: str):
    assert reject(custom(value=bad)).reason == v.INVALID_VALUE


def test_huge_value_string_is_rejected():
    assert reject(custom(value="9" * 400)).reason == v.INVALID_VALUE


@pytest.mark.parametrize(("raw", "number"), [("72.39", 72.39), ("10", 10.0), ("-5.5", -5.5)])
def test_value_becomes_a_number(raw: str, number: float):
    assert ok(custom(value=raw)).value == number


def test_currency_is_upper_cased():
    assert ok(custom(currency="eur")).currency == "EUR"


@pytest.mark.parametrize("bad", ["US", "USDD", "U$D", "123", "ÄBC"])
def test_currency_not_three_letters_is_rejected(bad: str):
    assert reject(custom(currency=bad)).reason == v.INVALID_CURRENCY


def test_non_integer_num_items_is_rejected():
    assert reject(custom(num_items="2")).reason == v.INVALID_FIELD_TYPE


def test_bool_num_items_is_rejected():
    assert reject(custom(num_items=True)).reason == v.INVALID_FIELD_TYPE


def test_content_ids_must_be_strings():
    assert reject(custom(content_ids=[1])).reason == v.INVALID_FIELD_TYPE


def test_too_many_content_ids_are_rejected():
    assert reject(custom(content_ids=["a"] * (v.MAX_ITEMS + 1))).reason == v.TOO_MANY_ITEMS


def test_contents_must_be_an_array():
    assert reject(custom(contents={"id": "a"})).reason == v.INVALID_FIELD_TYPE


def test_contents_item_must_be_an_object():
    assert reject(custom(contents=["a"])).reason == v.INVALID_FIELD_TYPE


def test_unknown_contents_item_field_is_rejected():
    assert reject(custom(contents=[{"sku": "a"}])).reason == v.UNKNOWN_FIELD


def test_non_integer_quantity_is_rejected():
    assert reject(custom(contents=[{"quantity": 1.5}])).reason == v.INVALID_FIELD_TYPE


def test_numeric_item_price_is_rejected():
    assert reject(custom(contents=[{"item_price": 10}])).reason == v.INVALID_FIELD_TYPE


def test_too_many_contents_are_rejected():
    assert reject(custom(contents=[{}] * (v.MAX_ITEMS + 1))).reason == v.TOO_MANY_ITEMS


# ---------------------------------------------------------------- normalisation
def test_ip_ua_is_the_keyed_sha256_of_ip_bar_user_agent():
    result = ok(user(client_ip_address=IP, client_user_agent=UA))
    plain = hashlib.sha256(f"{IP}|{UA}".encode()).hexdigest()
    assert (
        result.ids["ip_ua"]
        == keyed_ip_ua(plain, IP_UA_KEY)
        == keyed_ip_ua(ip_ua_hash(IP, UA), IP_UA_KEY)
    )
    assert result.ids["ip_ua"] != plain


def test_ip_ua_differs_under_another_key():
    ev = user(client_ip_address=IP, client_user_agent=UA)
    other = validate_event(ev, received_at_ms=RECEIVED_MS, identifier_key="o" * 32)
    assert other.ids["ip_ua"] != ok(ev).ids["ip_ua"]


def test_without_a_key_ip_ua_is_checked_but_not_computed():
    """The HTTP API only checks events; the plain hash is never returned."""
    result = validate_event(
        user(client_ip_address=IP, client_user_agent=UA), received_at_ms=RECEIVED_MS
    )
    assert result.ids["ip_ua"] is None


def test_normalised_event_holds_no_plaintext_ip_or_user_agent():
    result = ok(user(client_ip_address=IP, client_user_agent=UA))
    text = repr(result)
    assert IP not in text
    assert UA not in text


def test_click_id_enters_the_pipeline_only_keyed():
    """ids.click_id is the internal click id: identity_match keys clicks the same way."""
    result = ok(user(em=[H1], click_id="epik-1"))
    assert result.ids["click_id"] == internal_click("epik-1", IP_UA_KEY)
    assert "epik-1" not in repr(result)


def test_without_a_key_the_click_id_is_left_out():
    """The HTTP API only checks events: nothing keyed, nothing plaintext."""
    result = validate_event(user(em=[H1], click_id="epik-1"), received_at_ms=RECEIVED_MS)
    assert result.ids["click_id"] is None


def test_hashes_are_lower_cased():
    assert ok(user(em=[H1.upper()])).ids["em"] == [H1]


def test_repeated_hashes_are_kept_once_in_order():
    assert ok(user(em=[H2, H1, H2.upper()])).ids["em"] == [H2, H1]


def test_ids_hold_the_match_identifiers_only():
    result = ok(user(em=[H1], ph=[H2], fn=[H1], external_id=[H2], click_id="epik-1"))
    assert result.ids == {
        "click_id": internal_click("epik-1", IP_UA_KEY),
        "external_id": [H2],
        "em": [H1],
        "ph": [H2],
        "hashed_maids": [],
        "ip_ua": None,
    }


def test_offline_action_source_has_offline_scope():
    assert ok(event(action_source="offline")).scope == "offline"


@pytest.mark.parametrize("source", ["web", "app_ios", "app_android"])
def test_other_action_sources_have_online_scope(source: str):
    assert ok(event(action_source=source)).scope == "online"


def test_conversion_key_shape():
    assert ok(event()).conversion_key("549755885175") == "549755885175:checkout:ev-1:online"


def test_opt_out_true_sets_the_flag():
    assert ok(event(opt_out=True)).opt_out is True


def test_opt_out_null_means_false():
    assert ok(event(opt_out=None)).opt_out is False


@pytest.mark.parametrize("raw", ["LDP", "ldp", "other, Ldp ", "CCPA,LDP"])
def test_ldp_in_opt_out_type_sets_the_flag(raw: str):
    assert ok(custom(opt_out_type=raw)).ldp is True


@pytest.mark.parametrize("raw", ["", "CCPA", "LDPX", "NOLDP"])
def test_other_opt_out_types_do_not_set_ldp(raw: str):
    assert ok(custom(opt_out_type=raw)).ldp is False


def test_every_reason_code_is_documented_in_the_module_docstring():
    assert v.__doc__ is not None
    for reason in v.EVENT_REASONS:
        assert f"``{reason}``" in v.__doc__
