"""The setup diagnostics' fact of a valid conversion, sent by ingest (pure).

A fact is the compact line the setup diagnostics count (docs/diagnostics.md),
keyed by ad account on ``diagnostics.facts``. The fact of a valid conversion is
made where the conversion already is, as attribute's publisher makes a result's
fact (``shared.contract.report_deltas.fact_of_result``): ingest sends it with
the conversions.valid record. Before, aggregate read all of conversions.valid,
the largest records of the conversions' path, only to make this fact: one
input per conversion more (docs/benchmarks.md, "Every changelog record
dropped").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.contract.records import Send
from shared.contract.report_deltas import FACTS, UNKNOWN, day_of_ms

#: Identifier slots of conversions.valid ``ids``; ``ip_ua`` is present only
#: when both the IP address and the user agent were sent (counted as a pair).
ID_TYPES = ("click_id", "external_id", "em", "ph", "hashed_maids", "ip_ua")


def fact_of_valid(conv: Mapping[str, Any]) -> dict[str, Any]:
    """The fact of one conversions.valid record: which identifiers it carries (never
    their values), its source, event name and receipt delay, on its day of receipt."""
    ids = conv.get("ids") or {}
    received = int(conv["received_at_ms"])
    return {
        "kind": "valid",
        "ref": conv["raw_ref"],
        "ad_account_id": conv["ad_account_id"],
        "day": day_of_ms(received),
        "source": conv.get("source") or UNKNOWN,
        "event_name": conv.get("event_name") or UNKNOWN,
        "conversion_key": conv["conversion_key"],
        "ids": [name for name in ID_TYPES if ids.get(name)],
        "delay_ms": received - int(conv["event_time"]) * 1000,
    }


def send_of_valid(conv: Mapping[str, Any]) -> Send:
    """The fact of a valid conversion, as the record ingest sends with it."""
    fact = fact_of_valid(conv)
    return Send(FACTS, fact["ad_account_id"], fact)


__all__ = ["ID_TYPES", "fact_of_valid", "send_of_valid"]
