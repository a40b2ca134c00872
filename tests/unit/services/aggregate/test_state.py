"""Typed table values of the aggregate service keep the changelog layout."""

from services.aggregate import state


def test_rows_value_round_trips_in_its_layout():
    raw = {"members": {"k1": [3, True, 1.5, "USD"], "k2": [4, False, None, None]}, "version": 9}
    row = state.decode_row(raw)
    assert row.members["k2"] == state.RowMember(4, False)
    assert state.encode_row(row) == raw
    assert state.decode_row(None) == state.Row()
