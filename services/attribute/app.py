"""The attribute service's Faust App (one per worker process)."""

from __future__ import annotations

import faust

from shared.settings import Settings
from shared.worker import build_service_app


def build(settings: Settings | None = None) -> faust.App:
    return build_service_app("attribute", settings or Settings.from_env("attribute"))
