"""Agents of the identity_match service (placeholder: consumes its input, keeps its store open)."""

from __future__ import annotations

from typing import Any

import faust

from shared.app import raw_table, raw_topic
from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    raw_table(app, settings, "conversions")
    source = raw_topic(app, settings, "conversions.accepted")

    @app.agent(source, name="identity_match-main")
    async def main(stream: Any) -> None:
        async for _batch in stream.take_events(settings.batch_size, settings.batch_within_s):
            pass
