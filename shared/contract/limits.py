"""The numbers of the contract that more than one service needs.

Every time limit the rules use is written here once: the services, the
workload generator and the reference model read them from this module.
"""

from __future__ import annotations

from collections.abc import Mapping

DAY_S = 86_400
DAY_MS = DAY_S * 1000

#: Attribution windows an ad account may choose (days; 0 turns a class off).
ALLOWED_WINDOW_DAYS = frozenset({0, 1, 7, 14, 30, 60})
LONGEST_WINDOW_DAYS = max(ALLOWED_WINDOW_DAYS)
#: Default attribution windows per touch class (days).
DEFAULT_WINDOWS_DAYS: Mapping[str, int] = {"click": 30, "engagement": 30, "view": 1}

#: The oldest valid event: the longest window plus 7 days, before received_at_ms.
MAX_EVENT_AGE_DAYS = LONGEST_WINDOW_DAYS + 7
MAX_EVENT_AGE_S = MAX_EVENT_AGE_DAYS * DAY_S
MAX_EVENT_AGE_MS = MAX_EVENT_AGE_S * 1000
#: The newest valid event: at most this far after received_at_ms.
MAX_FUTURE_S = 3_600
MAX_FUTURE_MS = MAX_FUTURE_S * 1000

#: An ip_ua signal matches conversions within this long after its ts_ms (inclusive).
IP_UA_VALIDITY_MS = 7 * DAY_MS

#: Engagements older than this can no longer be in any window of any valid
#: conversion: the longest window plus the oldest accepted event.
ENGAGEMENT_RETENTION_MS = LONGEST_WINDOW_DAYS * DAY_MS + MAX_EVENT_AGE_MS

#: How far back of the clock the state keeps what a back-fill needs (events are valid
#: relative to their own received_at_ms): retention counts from the data's time, but
#: never from further back than this, so that stale or mis-dated data still goes.
MAX_BACKFILL_DAYS = 730
MAX_BACKFILL_MS = MAX_BACKFILL_DAYS * DAY_MS
MAX_BACKFILL_S = MAX_BACKFILL_DAYS * DAY_S
