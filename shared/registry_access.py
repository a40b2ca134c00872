"""The registry of the process's settings (topics.yaml, read once)."""

from __future__ import annotations

from shared.settings import Settings
from shared.topics import Registry, load_registry


def registry_for(settings: Settings) -> Registry:
    return load_registry(settings.topics_file)
