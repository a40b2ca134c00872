"""Setup diagnostics, part one (pure): per-event facts and their day buckets.

Four kinds of input become compact *facts* keyed by ad account (topic
``diagnostics.facts``), so that every fact of an account meets the account's
buckets on one partition:

* ``valid`` (a conversions.valid record, sent by ingest with the record:
  ``shared.contract.diagnostic_facts.fact_of_valid``): source, event name,
  which identifiers it carries, receipt delay; counted on the UTC day of
  ``received_at_ms``;
* ``duplicate`` (conversions.duplicates): counted on the UTC day the
  duplicate was recorded (its Kafka timestamp);
* ``rejected`` (conversions.dlq records of conversions.raw inputs): reason and
  the already-redacted example; on the day of the envelope's
  ``received_at_ms`` when readable, else of the DLQ record;
* ``result`` (a conversions.attributed record, sent by attribute's publisher
  with the record: ``shared.contract.report_deltas.fact_of_result``): the
  latest match outcome of a conversion; on the UTC day of its ``event_time``.

A bucket (table ``diagnostics``, key ``"{ad_account_id}:{YYYY-MM-DD}"``)
holds the day's counters; a small marker per conversion_key (or rejected
input) remembers what it was counted with, so a redelivered fact
(at-least-once) is counted once and a re-attribution replaces its earlier
outcome, never adds. Formulas: docs/diagnostics.md.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from typing import Any

import orjson

from shared.contract.diagnostic_facts import ID_TYPES
from shared.contract.limits import DAY_MS
from shared.contract.report_deltas import UNKNOWN, day_of_ms, fact_of_result

LAYOUT_VERSION = 1
#: Upper bounds (seconds) of the receipt-delay histogram; one more bin above.
DELAY_BOUNDS_S = (
    1,
    5,
    15,
    60,
    300,
    900,
    3_600,
    3 * 3_600,
    6 * 3_600,
    12 * 3_600,
    86_400,
    2 * 86_400,
    3 * 86_400,
    7 * 86_400,
)
#: Buckets older than this many days are deleted when the account's newest
#: bucket is written (28-day window + a day of slack).
KEEP_DAYS = 29


def bucket_key(ad_account_id: str, day: str) -> str:
    return f"{ad_account_id}:{day}"


def delay_bin(delay_ms: int) -> int:
    """The histogram bin of a receipt delay (negative delays count as 0)."""
    return bisect_left(DELAY_BOUNDS_S, max(0, delay_ms) / 1000)


def event_name_of(conversion_key: str) -> str:
    """The event name inside ``"{ad_account_id}:{event_name}:{event_id}:{scope}"``."""
    parts = conversion_key.split(":")
    return parts[1] if len(parts) >= 4 else UNKNOWN


# ----------------------------------------------------------------- facts


def fact_of_duplicate(audit: dict[str, Any], timestamp_ms: int) -> dict[str, Any]:
    return {
        "kind": "duplicate",
        "ref": audit["raw_ref"],
        "ad_account_id": audit["ad_account_id"],
        "day": day_of_ms(timestamp_ms),
        "source": audit.get("source") or UNKNOWN,
        "event_name": event_name_of(audit["conversion_key"]),
        "conversion_key": audit["conversion_key"],
    }


def fact_of_rejected(dead: dict[str, Any], timestamp_ms: int) -> dict[str, Any] | None:
    """The fact of a rejected input; None when the account is not known."""
    account = dead.get("ad_account_id")
    if not isinstance(account, str) or not account:
        return None
    envelope = _parsed(dead.get("raw"))
    found = envelope.get("event")
    event: dict[str, Any] = found if isinstance(found, dict) else {}
    received = envelope.get("received_at_ms")
    when = received if type(received) is int and received >= 0 else timestamp_ms
    source, name = envelope.get("source"), event.get("event_name")
    return {
        "kind": "rejected",
        "ref": f"{dead.get('source_topic')}:{dead.get('partition')}:{dead.get('offset')}",
        "ad_account_id": account,
        "day": day_of_ms(when),
        "source": source if isinstance(source, str) and source else "topic",
        "event_name": name if isinstance(name, str) and name else UNKNOWN,
        "reason": str(dead.get("reason", UNKNOWN)),
        "example": dead.get("raw"),
    }


def _parsed(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str):
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


# ---------------------------------------------------------------- buckets
#
# Two kinds of keys per account and day, so that no value grows with the
# number of events (a changelog record must stay far below Kafka's 1 MB):
#
# * the bucket ``"{ad_account_id}:{day}"``: counters only (a few KB);
# * markers ``"{ad_account_id}/{day}/{kind}/{id}"``: what one conversion_key
#   (or one rejected input) was counted with, to count each input once.
#
# ``:`` and ``/`` keep the two apart in a prefix read: ``"{id}:"`` reads the
# buckets only.


def marker_key(fact: dict[str, Any]) -> str:
    """The marker of the input a fact counts (see above)."""
    kind = fact["kind"]
    ident = fact["ref"] if kind in ("rejected", "result") else fact["conversion_key"]
    space = {"valid": "ck", "duplicate": "ck", "rejected": "rej", "result": "res"}[kind]
    return f"{fact['ad_account_id']}/{fact['day']}/{space}/{ident}"


def markers_prefix(ad_account_id: str, day: str) -> str:
    return f"{ad_account_id}/{day}/"


def empty_bucket() -> dict[str, Any]:
    return {
        "v": LAYOUT_VERSION,
        "cells": {},
        "reasons": {},
        "redundancy": {"tag": 0, "api": 0, "both": 0},
        "results": {},
    }


def empty_cell() -> dict[str, Any]:
    return {
        "valid": 0,
        "duplicate": 0,
        "rejected": 0,
        "ids": dict.fromkeys(ID_TYPES, 0),
        "delay": [0] * (len(DELAY_BOUNDS_S) + 1),
    }


Folded = tuple[dict[str, Any], Any, bool]


def fold(bucket: dict[str, Any] | None, marker: Any, fact: dict[str, Any]) -> Folded:
    """The bucket and marker with one fact counted; False when it was counted already."""
    bucket = bucket or empty_bucket()
    if fact["kind"] == "result":
        return _fold_result(bucket, marker, fact)
    marker = marker or {"refs": [], "sources": []}
    ref = f"{fact['kind']}|{fact['ref']}"
    if ref in marker["refs"]:
        return bucket, marker, False
    marker["refs"].append(ref)
    cell = bucket["cells"].setdefault(f"{fact['source']}|{fact['event_name']}", empty_cell())
    cell[fact["kind"]] += 1
    if fact["kind"] == "valid":
        for name in fact["ids"]:
            cell["ids"][name] += 1
        cell["delay"][delay_bin(int(fact["delay_ms"]))] += 1
        _add_source(bucket["redundancy"], marker["sources"], fact["source"])
    elif fact["kind"] == "rejected":
        reason = bucket["reasons"].setdefault(
            f"{fact['source']}|{fact['event_name']}|{fact['reason']}",
            {"count": 0, "example": fact["example"]},
        )
        reason["count"] += 1
    return bucket, marker, True


def _add_source(counts: dict[str, int], sources: list[str], source: str) -> None:
    """Count a conversion_key once per source set change (tag, api, both)."""
    if source in sources:
        return
    before = set(sources)
    sources.append(source)
    sources.sort()
    for name in ("tag", "api"):
        if source == name:
            counts[name] += 1
    if {"tag", "api"} <= set(sources) and not {"tag", "api"} <= before:
        counts["both"] += 1


def _fold_result(bucket: dict[str, Any], marker: Any, fact: dict[str, Any]) -> Folded:
    """The latest outcome of a conversion replaces its earlier one in the counts."""
    if marker is not None and marker[0] >= fact["version"]:
        return bucket, marker, False
    results = bucket["results"]
    if marker is not None:
        old = f"{marker[1]}|{marker[2]}"
        # Bucket and marker are two keys: a worker rebuilding the partition from
        # a changelog cut by a kill -9 between them can hold the marker without
        # its count. Never below zero, never a failure on an internal record.
        if results.get(old, 0) > 0:
            results[old] -= 1
        if not results.get(old):
            results.pop(old, None)
    new = f"{fact['event_name']}|{fact['outcome']}"
    results[new] = results.get(new, 0) + 1
    return bucket, [fact["version"], fact["event_name"], fact["outcome"]], True


def expired_day(day: str) -> str:
    """The day whose bucket and markers go when ``day``'s bucket is created."""
    return (dt.date.fromisoformat(day) - dt.timedelta(days=KEEP_DAYS + 1)).isoformat()


__all__ = [
    "DAY_MS",
    "ID_TYPES",
    "bucket_key",
    "fact_of_result",
    "fold",
    "marker_key",
]
