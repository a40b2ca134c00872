"""The registry of the process's settings (topics.yaml, read once)."""

from __future__ import annotations

from shared.kafka.topics import Registry, load_registry
from shared.runtime.settings import Settings


def registry_for(settings: Settings) -> Registry:
    return load_registry(settings.topics_file)
