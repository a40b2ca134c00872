"""Run one service worker: settings from the environment, JSON logs, Faust worker."""

from __future__ import annotations

import sys
from collections.abc import Callable

import faust

from shared.kafka.client_config import check_client_settings
from shared.runtime.collector import tune_collector
from shared.runtime.errors import ConfigError
from shared.runtime.logging import configure_logging, get_logger, logging_dict_config
from shared.runtime.metrics import metrics_of
from shared.runtime.settings import Settings
from shared.runtime.stall_report import watch_recovery
from shared.runtime.stores import set_aside_stores_of_another_app, set_aside_unopenable_stores

AppBuilder = Callable[[Settings], faust.App]


def run(service: str, build: AppBuilder) -> None:
    """Entry point of ``python -m services.<service>``: ``build`` is the service's app.py."""
    try:
        settings = Settings.from_env(service)
        settings.require_secrets()  # before anything starts: no service runs on a public key
        check_client_settings(settings)  # a bad TLS / SASL setting: named here, not retried
    except ConfigError as exc:
        print(f"convmesh {service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(service, settings.worker, settings.log_level)
    # Before Faust opens anything: a damaged store would make every start fail,
    # a store of another namespace would be taken for this one's.
    stores_log = get_logger(component="stores")
    set_aside_stores_of_another_app(settings.worker_data_dir, settings.app_id, stores_log)
    set_aside_unopenable_stores(settings.worker_data_dir, stores_log)
    app = build(settings)
    # One app per process here: the collector is the process's, its pauses the app's metric.
    tune_collector(settings.gc_thresholds, metrics_of(app).gc_paused)
    # A recovery that hangs leaves the worker without views or timers: report from a thread.
    watch_recovery(app, get_logger(component="stall-report"))
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_dict_config(service, settings.worker, settings.log_level),
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    worker.execute_from_commandline()
