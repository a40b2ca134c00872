"""Client of aggregate's advertiser API, and its tables (`convmesh report|diagnostics`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from shared.contract.errors import ConvmeshError
from shared.runtime.settings import Settings


def default_url(settings: Settings) -> str:
    """Aggregate's first worker: it forwards a request for an account it does not own."""
    return f"http://{settings.web_host}:{settings.service_base_port('aggregate')}"


async def get(url: str, token: str, *, csv: bool = False) -> str:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/csv" if csv else "application/json",
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.get(url, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                try:
                    message = orjson.loads(text).get("message", text)
                except orjson.JSONDecodeError:
                    message = text[:200]
                raise ConvmeshError(f"{resp.status}: {message}")
            return text


def report_table(report: dict[str, Any]) -> Table:
    rows = report["rows"]
    columns = list(dict.fromkeys(c for row in rows for c in row))
    title = (
        f"ad account {report['ad_account_id']} · {report['lane']} · {report['level']}"
        f" · {report['from']} .. {report['to']}"
    )
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in ("conversions",) else "left")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_diagnostics(doc: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]Setup diagnostics[/] of ad account {doc['ad_account_id']} as of {doc['as_of']}"
    )
    windows = doc["windows"]
    counts = Table(title="events")
    counts.add_column("")
    for name in windows:
        counts.add_column(name, justify="right")
    for label, pick in (
        ("received", lambda w: w["received"]),
        ("accepted", lambda w: w["accepted"]),
        ("duplicate", lambda w: w["duplicate"]),
        ("rejected", lambda w: w["rejected"]),
        ("match rate", lambda w: _pct(w["match_rate"]["overall"])),
        ("tag+API redundancy", lambda w: _pct(w["redundancy"]["share"])),
        ("freshness p50 (s, <=)", lambda w: w["freshness_s"]["p50"]),
        ("freshness p95 (s, <=)", lambda w: w["freshness_s"]["p95"]),
    ):
        counts.add_row(label, *(_cell(pick(w)) for w in windows.values()))
    console.print(counts)
    last = windows["28d"]
    coverage = Table(title="identifier coverage, last 28 days")
    coverage.add_column("identifier")
    coverage.add_column("share of valid events", justify="right")
    coverage.add_column("match share", justify="right")
    for name, value in last["identifier_coverage"].items():
        coverage.add_row(name, _pct(value), _pct(last["match_rate"]["by_key_type"].get(name)))
    console.print(coverage)
    if last["by_source"]:
        sources = Table(title="by source, last 28 days")
        for column in ("source", "received", "accepted", "duplicate", "rejected"):
            sources.add_column(column, justify="left" if column == "source" else "right")
        for name, c in last["by_source"].items():
            sources.add_row(
                name, *(str(c[k]) for k in ("received", "accepted", "duplicate", "rejected"))
            )
        console.print(sources)
    for reason in last["top_reject_reasons"]:
        console.print(
            f"rejected [bold]{reason['reason']}[/] x{reason['count']}: {reason['example']}"
        )
    for advice in last["recommendations"]:
        console.print(f"• {advice}")
    if not last["recommendations"]:
        console.print("no recommendations: nothing stands out")
