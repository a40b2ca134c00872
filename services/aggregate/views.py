"""Operator web views of the aggregate service."""

from __future__ import annotations

import faust

from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    """No views beyond /health and /ready yet."""
