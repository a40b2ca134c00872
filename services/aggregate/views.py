"""Web views of aggregate's workers.

The advertiser API (reports, setup diagnostics) is in ``advertiser_api``.
"""

from __future__ import annotations

import faust

from services.aggregate import advertiser_api, console_view, state
from shared.runtime.settings import Settings
from shared.runtime.table_views import register_table_views

TABLES = ("rows", "row_members", "strata", "stratum_members", "buckets", "privacy")
#: Keyed by ad account data (account, date, campaign...), shown as they are;
#: member keys end in a conversion_key (with its event_id), shown as a hash.
ACCOUNT_KEYED = ("rows", "strata", "privacy")
#: Every table is partitioned by ad account (reports.deltas' key), read out of its keys.
PARTITION_KEYS = {
    "rows": state.ad_account_of_row_key,
    "row_members": state.ad_account_of_row_key,
    "strata": state.ad_account_of_key,
    "stratum_members": state.ad_account_of_key,
    "buckets": state.ad_account_of_key,
}


def register(app: faust.App, settings: Settings) -> None:
    register_table_views(
        app, settings, *TABLES, safe_keys=ACCOUNT_KEYED, partition_keys=PARTITION_KEYS
    )
    console_view.register(app, settings)
    advertiser_api.register(app, settings)
