"""Operator web views of the identity_match service: its tables (shared.runtime.table_views)."""

from __future__ import annotations

import faust

from services.identity_match import state
from shared.runtime.settings import Settings
from shared.runtime.table_views import register_table_views

#: Keyed by identifiers, user ids or conversion keys: shown only as hashes.
TABLES = (
    "conversions",
    "keys",
    "watchers",
    "user_index",
)


#: A watcher's key starts with its identifier, whose partition it is kept in.
PARTITION_KEYS = {"watchers": state.identifier_of_watcher_key}


def register(app: faust.App, settings: Settings) -> None:
    register_table_views(app, settings, *TABLES, partition_keys=PARTITION_KEYS)
