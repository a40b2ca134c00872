"""Operator web views of the attribute service: its tables (shared.runtime.table_views)."""

from __future__ import annotations

import faust

from services.attribute import state
from shared.runtime.settings import Settings
from shared.runtime.table_views import register_table_views

#: Keyed by identifiers, user ids or conversion keys: shown only as hashes.
TABLES = (
    "users",
    "published",
)
#: A user's keys start with the user, whose partition they are kept in.
PARTITION_KEYS = {"users": state.user_of_key}


def register(app: faust.App, settings: Settings) -> None:
    register_table_views(app, settings, *TABLES, partition_keys=PARTITION_KEYS)
