"""Event files, read one line at a time (never the whole file).

NDJSON: one Conversions API event object per line (blank lines skipped).

CSV (header row required; docs/api.md lists the columns): the event fields
``event_name, action_source, event_time, event_id`` and the optional
``event_source_url, opt_out``; identifiers ``em, ph, external_id,
hashed_maids`` (SHA-256 hex; several separated by ``;``) and ``click_id,
client_ip_address, client_user_agent``; ``value, currency, order_id`` go to
``custom_data``. Empty cells are left out.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared.contract.errors import ConvmeshError

T = TypeVar("T", bytes, str)

EVENT_COLUMNS = ("event_name", "action_source", "event_id", "event_source_url")
LIST_IDS = ("em", "ph", "external_id", "hashed_maids")
TEXT_IDS = ("click_id", "client_ip_address", "client_user_agent")
CUSTOM = ("value", "currency", "order_id")
CSV_COLUMNS = (*EVENT_COLUMNS, "event_time", "opt_out", *LIST_IDS, *TEXT_IDS, *CUSTOM)


class BadLine(ConvmeshError):
    """A line that is no event; the message names the line, never its content."""


def file_format(path: Path, forced: str | None = None) -> str:
    if forced:
        return forced
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


def read_ndjson(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadLine(f"line {number}: not JSON") from None
        if not isinstance(event, dict):
            raise BadLine(f"line {number}: not a JSON object")
        yield event


def read_csv(text: Iterable[str]) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(text)
    unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
    if unknown:
        raise BadLine(f"unknown CSV columns: {sorted(unknown)} (known: {list(CSV_COLUMNS)})")
    for row in reader:
        yield event_of_row(row, reader.line_num)


def event_of_row(row: dict[str, str], line: int = 0) -> dict[str, Any]:
    """One CSV row as a Conversions API event."""
    cell = {name: (value or "").strip() for name, value in row.items() if name}
    event: dict[str, Any] = {name: cell[name] for name in EVENT_COLUMNS if cell.get(name)}
    if cell.get("event_time"):
        try:
            event["event_time"] = int(cell["event_time"])
        except ValueError:
            raise BadLine(f"line {line}: event_time must be Unix seconds") from None
    if cell.get("opt_out"):
        event["opt_out"] = cell["opt_out"].lower() in ("1", "true", "yes")
    user_data: dict[str, Any] = {
        name: [v.strip() for v in cell[name].split(";") if v.strip()]
        for name in LIST_IDS
        if cell.get(name)
    }
    user_data.update({name: cell[name] for name in TEXT_IDS if cell.get(name)})
    event["user_data"] = user_data
    custom = {name: cell[name] for name in CUSTOM if cell.get(name)}
    if custom:
        event["custom_data"] = custom
    return event


def read_events(
    path: Path, forced_format: str | None = None, on_read: Callable[[int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The events of ``path``, streamed; ``on_read(n)`` after each line (n: its length)."""
    if file_format(path, forced_format) == "csv":
        with path.open(newline="", encoding="utf-8") as text:
            yield from read_csv(_counted(text, on_read))
    else:
        with path.open("rb") as raw:
            yield from read_ndjson(_counted(raw, on_read))


def _counted(lines: Iterable[T], on_read: Callable[[int], None] | None) -> Iterator[T]:
    for line in lines:
        if on_read is not None:
            on_read(len(line))
        yield line


def batches(events: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of at most ``size`` events, in order; only one list held at a time."""
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
