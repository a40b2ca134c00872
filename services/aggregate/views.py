"""Web views of aggregate's workers.

The advertiser API (reports, setup diagnostics) is in ``advertiser_api``.
"""

from __future__ import annotations

import faust

from services.aggregate import advertiser_api, console_view
from shared.runtime.settings import Settings
from shared.runtime.table_views import register_table_views

TABLES = ("rows", "row_members", "strata", "stratum_members", "buckets", "privacy")
#: Keyed by ad account data (account, date, campaign...), shown as they are;
#: member keys end in a conversion_key (with its event_id), shown as a hash.
ACCOUNT_KEYED = ("rows", "strata", "privacy")


def register(app: faust.App, settings: Settings) -> None:
    register_table_views(app, settings, *TABLES, safe_keys=ACCOUNT_KEYED)
    console_view.register(app, settings)
    advertiser_api.register(app, settings)
