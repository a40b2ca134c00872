"""structlog JSON logging: one JSON object per line, the service on every line.

Faust, mode and aiokafka log through the standard library; their records are
rendered by the same structlog processors so that the whole output of a worker
is machine-readable JSON.
"""

from __future__ import annotations

import hashlib
import logging
import logging.config
import sys
from typing import Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_dict_config(service: str, worker: int, level: str) -> dict[str, Any]:
    """A logging.dictConfig that renders stdlib records as structlog JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "service": {"()": _ServiceFilter, "service": service, "worker": worker},
        },
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": [
                    *_SHARED_PROCESSORS,
                    structlog.stdlib.add_logger_name,
                    structlog.stdlib.ExtraAdder(),
                ],
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["service"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # Chatty at INFO; their warnings still show.
            "aiokafka": {"level": "WARNING"},
            "kafka": {"level": "WARNING"},
        },
    }


class _ServiceFilter(logging.Filter):
    """Stamps every stdlib record with the service and worker."""

    def __init__(self, service: str, worker: int) -> None:
        super().__init__()
        self.service = service
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.worker = self.worker
        return True


def configure_logging(service: str, worker: int = 0, level: str = "INFO") -> None:
    """Configure structlog and the standard library for one process."""
    logging.config.dictConfig(logging_dict_config(service, worker, level))
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, worker=worker)


def get_logger(**bound: Any) -> Any:
    """A logger that binds ``bound``; lazy, so that it may be made before
    ``configure_logging`` (at import) and still log as configured."""
    return structlog.get_logger(**bound)


def message_fields(message: Any, *, user_keyed: bool = False) -> dict[str, Any]:
    """The fields every log line about a Kafka message carries.

    Keys are ids, hashes or conversion keys, never plaintext identifiers. A
    topic keyed by user id (``user_keyed``) logs the key only as a short hash:
    user ids leave the pipeline only as pseudonyms, logs included.
    """
    key = message.key
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if user_keyed and key is not None:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": key,
    }
