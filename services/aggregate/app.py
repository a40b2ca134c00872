"""The aggregate service's Faust App (one per worker process): its agents and views."""

from __future__ import annotations

import faust

from services.aggregate import agents, diagnostics_agent, views
from shared.runtime.app import create_service_app
from shared.runtime.settings import Settings


def build(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env("aggregate")
    return create_service_app(
        settings,
        agents.register,
        diagnostics_agent.register,
        views.register,
        fetch_wait_ms=settings.reports_fetch_wait_ms,
    )
