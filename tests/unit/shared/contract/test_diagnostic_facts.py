"""The fact ingest sends with each valid conversion (shared.contract.diagnostic_facts)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.contract.diagnostic_facts import ID_TYPES, fact_of_valid, send_of_valid
from shared.contract.report_deltas import FACTS
from tests.support.conversions import ACCOUNT
from tests.support.conversions import valid_conversion as valid


def test_the_fact_goes_to_diagnostics_facts_keyed_by_ad_account() -> None:
    send = send_of_valid(valid())
    assert (send.topic, send.key) == (FACTS, ACCOUNT)
    assert send.value == fact_of_valid(valid())


def test_the_fact_is_counted_on_the_day_of_receipt_with_its_delay() -> None:
    fact = fact_of_valid(valid())
    assert fact["day"] == "2025-11-26"
    assert fact["delay_ms"] == 200_000


def test_a_conversion_without_source_or_event_name_counts_as_unknown() -> None:
    fact = fact_of_valid(valid(source=None, event_name=None))
    assert (fact["source"], fact["event_name"]) == ("unknown", "unknown")


@given(st.dictionaries(st.sampled_from([*ID_TYPES, "other"]), st.lists(st.text(min_size=1))))
def test_ids_are_the_present_identifier_types_in_their_order(ids: dict[str, list[str]]) -> None:
    """Which types a conversion carries, never the identifiers (nor unknown types)."""
    fact = fact_of_valid(valid(ids=ids))
    assert fact["ids"] == [name for name in ID_TYPES if ids.get(name)]
