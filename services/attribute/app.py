"""The attribute service's Faust App (one per worker process): its agents and views."""

from __future__ import annotations

import faust

from services.attribute import agents, views
from shared.runtime.app import create_service_app
from shared.runtime.settings import Settings


def build(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env("attribute")
    # Its agents feed each other (users -> publisher): with CONVMESH_CONSUMER_WAKE_ON_PATH a
    # fetch wakes on their records.
    return create_service_app(settings, agents.register, views.register, wake_on=agents.PATH_INPUTS)
