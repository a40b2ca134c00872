"""Typed table values of the aggregate service keep the changelog layout."""

from hypothesis import given
from hypothesis import strategies as st

from services.aggregate import state
from shared.contract.report_deltas import ROW_FIELDS, row_key


def test_rows_value_round_trips_in_its_layout():
    raw = {"members": {"k1": [3, True, 1.5, "USD"], "k2": [4, False, None, None]}, "version": 9}
    row = state.decode_row(raw)
    assert row.members["k2"] == state.RowMember(4, False)
    assert state.encode_row(row) == raw
    assert state.decode_row(None) == state.Row()


texts = st.text(max_size=12)


@given(st.from_regex(r"[0-9]{1,15}", fullmatch=True), texts, texts, st.text(max_size=20))
def test_a_row_or_member_key_is_routed_by_its_ad_account(
    account: str, campaign: str, event_name: str, conversion_key: str
) -> None:
    """Whatever the row's other fields and the conversion key hold (``|``, ``:``, quotes)."""
    row = {field: "x" for field in ROW_FIELDS}
    row.update(ad_account_id=account, campaign_id=campaign, event_name=event_name)
    key = row_key(row)
    assert state.ad_account_of_row_key(key) == account
    assert state.ad_account_of_row_key(state.member_key(key, conversion_key)) == account


@given(st.from_regex(r"[0-9]{1,15}", fullmatch=True), st.text(max_size=20))
def test_a_stratum_or_bucket_key_is_routed_by_its_ad_account(account: str, rest: str) -> None:
    stratum = f"{account}:checkout:web:2026-12-03"
    assert state.ad_account_of_key(stratum) == account
    assert state.ad_account_of_key(state.member_key(stratum, rest)) == account
    assert state.ad_account_of_key(state.member_key(f"{account}:2026-12-03", rest)) == account
