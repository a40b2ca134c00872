"""Web views of aggregate's workers.

The advertiser API (reports, setup diagnostics) is in ``advertiser_api``.
"""

from __future__ import annotations

import faust

from services.aggregate import advertiser_api
from shared.runtime.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    advertiser_api.register(app, settings)
