"""Operator web views of the attribute service."""

from __future__ import annotations

import faust

from shared.runtime.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    """No views beyond /health and /ready yet."""
