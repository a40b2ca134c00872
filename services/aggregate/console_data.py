"""What the operator console shows, computed from metrics and tables (pure).

* ``lanes_of``: per ad account and date, the three report lanes as the
  aggregate tables hold them: observed (``rows``, as reports.conversions),
  modeled (``strata``, as reports.conversions.modeled: modeled_attributed),
  protected (``privacy`` releases, as reports.conversions.protected).
* ``pipeline_of``: the workers' Prometheus samples summed per service: records
  in and out per topic, lag, rejects per reason, match outcomes per key type,
  attribution outcomes per touch type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from services.aggregate import lanes, rules, state

Lanes = dict[str, dict[str, dict[str, float]]]
LANES = ("observed", "modeled", "protected")


def _add(found: Lanes, account: str, date: str, lane: str, amount: float) -> None:
    day = found.setdefault(account, {}).setdefault(date, dict.fromkeys(LANES, 0.0))
    day[lane] += amount


def lanes_of(
    rows: Iterable[tuple[bytes, bytes]],
    strata: Iterable[tuple[bytes, bytes]],
    privacy: Iterable[tuple[bytes, bytes]],
    k: int,
) -> Lanes:
    """Conversions per (ad account, date) in each lane."""
    found: Lanes = {}
    for key, raw in rows:
        record = rules.summarise(key.decode(), state.decode_row_totals(orjson.loads(raw)))
        if record is not None:
            _add(found, record["ad_account_id"], record["date"], "observed", record["conversions"])
    for key, raw in strata:
        totals = state.decode_stratum_totals(orjson.loads(raw))
        modeled = lanes.modeled_record(key.decode(), totals, k)
        if modeled is not None:
            amount = float(modeled["modeled_attributed"] or 0)
            _add(found, modeled["ad_account_id"], modeled["date"], "modeled", amount)
    for key, raw in privacy:
        account = state.decode_privacy(orjson.loads(raw))
        for date, release in account.released.items():
            total = sum(int(row.get("conversions", 0)) for row in release.rows.values())
            _add(found, key.decode(), date, "protected", total)
    return found


def merge_lanes(parts: Iterable[Lanes]) -> Lanes:
    """The lanes of several aggregate workers (each holds other accounts)."""
    merged: Lanes = {}
    for part in parts:
        for account, dates in part.items():
            for date, day in dates.items():
                for lane, amount in day.items():
                    _add(merged, account, date, lane, amount)
    return merged


Samples = list[tuple[str, dict[str, str], float]]


def parse_samples(text: str) -> Samples:
    """A Prometheus exposition as (sample name, labels, value)."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _sum_by(samples: Samples, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for sample, labels, value in samples:
        if sample == name:
            found[labels.get(label, "")] = found.get(labels.get(label, ""), 0.0) + value
    return found


def _total(samples: Samples, name: str) -> float:
    return sum(value for sample, _, value in samples if sample == name)


def pipeline_of(workers: Mapping[str, list[Samples]]) -> dict[str, Any]:
    """Per service (in pipeline order), the sums over its workers' samples."""
    services = []
    for service, per_worker in workers.items():
        samples = [s for worker in per_worker for s in worker]
        services.append(
            {
                "service": service,
                "workers": len(per_worker),
                "records_in": _sum_by(samples, "convmesh_records_in_total", "topic"),
                "records_out": _sum_by(samples, "convmesh_records_out_total", "topic"),
                "lag": _total(samples, "convmesh_consumer_lag_records"),
                "rejects": _sum_by(samples, "convmesh_rejects_total", "reason"),
                "duplicates": _total(samples, "convmesh_duplicates_total"),
                "matches": _sum_by(samples, "convmesh_match_outcomes_total", "key_type"),
                "touches": _sum_by(samples, "convmesh_attribution_outcomes_total", "touch_type"),
                "batches": _total(samples, "convmesh_batch_processing_seconds_count"),
            }
        )
    return {"services": services}
