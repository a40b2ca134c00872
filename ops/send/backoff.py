"""Retry pauses for 429 and 503 answers: exponential, capped, Retry-After honoured."""

from __future__ import annotations

RETRY_STATUSES = frozenset({429, 503})
FIRST_S = 0.5
MAX_S = 30.0
MAX_ATTEMPTS = 8


def pause_s(attempt: int, retry_after: str | None = None) -> float:
    """The pause before retry number ``attempt`` (1-based).

    The server's ``Retry-After`` (seconds) wins when it asks for longer:
    retrying sooner would only be refused again.
    """
    pause: float = min(MAX_S, FIRST_S * 2.0 ** (attempt - 1))
    if retry_after:
        try:
            pause = max(pause, min(MAX_S, float(retry_after)))
        except ValueError:
            pass
    return pause


def should_retry(status: int, attempt: int) -> bool:
    return status in RETRY_STATUSES and attempt < MAX_ATTEMPTS
