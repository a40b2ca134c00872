"""Event files for `convmesh send`: NDJSON and CSV, streamed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ops.send.readers import BadLine, batches, event_of_row, read_csv, read_events, read_ndjson

H = "a" * 64


def test_ndjson_skips_blank_lines() -> None:
    assert list(read_ndjson([b'{"event_id":"1"}\n', b"\n", b'{"event_id":"2"}'])) == [
        {"event_id": "1"},
        {"event_id": "2"},
    ]


def test_ndjson_bad_line_names_the_line_not_its_content() -> None:
    with pytest.raises(BadLine, match="line 2: not JSON") as caught:
        list(read_ndjson([b"{}", b"dana@example.net"]))
    assert "dana" not in str(caught.value)


def test_csv_row_becomes_an_api_event() -> None:
    row = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": "1764151000",
        "event_id": "ev-1",
        "em": f"{H}; {H}",
        "client_ip_address": "203.0.113.9",
        "client_user_agent": "Mozilla/5.0",
        "ph": "",
        "value": "72.39",
        "currency": "USD",
    }
    assert event_of_row(row) == {
        "event_name": "checkout",
        "action_source": "web",
        "event_id": "ev-1",
        "event_time": 1_764_151_000,
        "user_data": {
            "em": [H, H],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"value": "72.39", "currency": "USD"},
    }


def test_csv_with_an_unknown_column_is_refused() -> None:
    with pytest.raises(BadLine, match="unknown CSV columns"):
        list(read_csv(io.StringIO("event_name,email\ncheckout,x\n")))


def test_csv_event_time_must_be_seconds() -> None:
    with pytest.raises(BadLine, match="line 2: event_time"):
        list(read_csv(io.StringIO("event_name,event_time\ncheckout,yesterday\n")))


def test_format_follows_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("event_id,event_time\nev-1,5\n")
    (tmp_path / "e.ndjson").write_text('{"event_id":"ev-1"}\n')
    assert next(read_events(tmp_path / "e.csv"))["event_time"] == 5
    assert next(read_events(tmp_path / "e.ndjson")) == {"event_id": "ev-1"}


def test_progress_callback_counts_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(b'{"a":1}\n{"a":2}\n')
    seen: list[int] = []
    list(read_events(path, on_read=seen.append))
    assert sum(seen) == path.stat().st_size


def test_batches_are_at_most_the_size_and_keep_order() -> None:
    got = list(batches(({"n": n} for n in range(2501)), 1000))
    assert [len(b) for b in got] == [1000, 1000, 501]
    assert [e["n"] for b in got for e in b] == list(range(2501))
