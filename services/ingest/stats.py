"""In-memory counters of the ingest agent, per source, and the ``/stats`` view.

Per source (api, tag, topic, batch; ``unknown`` when the envelope does not say
one): ``received`` = ``valid`` + ``rejected`` once every batch is published.
Counters are per worker process and start at zero when it starts; they count
deliveries, so a record redelivered after a crash, or in a batch run again after
a failed send, is counted again.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from shared.runtime.settings import Settings
from shared.runtime.web_auth import operator_page


class IngestStats:
    """What the ingest agent has received, sent to conversions.valid, and rejected."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.valid: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.batches = 0

    def count_valid(self, source: str) -> None:
        self.received[source] += 1
        self.valid[source] += 1

    def count_rejected(self, source: str, reason: str) -> None:
        self.received[source] += 1
        self.rejected[source] += 1
        self.reasons[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        sources = sorted(set(self.received) | set(self.valid) | set(self.rejected))
        return {
            "by_source": {
                s: {
                    "received": self.received[s],
                    "valid": self.valid[s],
                    "rejected": self.rejected[s],
                }
                for s in sources
            },
            "totals": {
                "received": sum(self.received.values()),
                "valid": sum(self.valid.values()),
                "rejected": sum(self.rejected.values()),
            },
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "batches": self.batches,
        }


def register_stats_view(app: faust.App, settings: Settings, stats: IngestStats) -> None:
    """``GET /stats``: the counters of this worker as JSON, for operators only."""

    @operator_page(app, settings, "/stats")
    async def ingest_stats(web: Any, request: Any) -> Any:
        return web.json(stats.snapshot())
