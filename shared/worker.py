"""Run one service worker: settings from the environment, JSON logs, Faust worker."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import faust

from shared.logging import configure_logging, logging_dict_config
from shared.settings import Settings


def build_service_app(service: str, settings: Settings) -> faust.App:
    """Create a service's App and let its agents and views register on it."""
    from shared.app import create_app

    app = create_app(settings)
    package = f"services.{service}"
    agents: Callable[[faust.App, Settings], None] = importlib.import_module(
        f"{package}.agents"
    ).register
    views: Callable[[faust.App, Settings], None] = importlib.import_module(
        f"{package}.views"
    ).register
    agents(app, settings)
    views(app, settings)
    return app


def run(service: str) -> None:
    """Entry point of ``python -m services.<service>``."""
    settings = Settings.from_env(service)
    configure_logging(service, settings.worker, settings.log_level)
    app = build_service_app(service, settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_dict_config(service, settings.worker, settings.log_level),
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    worker.execute_from_commandline()
