"""Report queries: GET /reports?ad_account_id=...&from=YYYY-MM-DD&to=...&level=campaign."""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.aggregate import console_view
from services.aggregate.report_query import QueryError, parse_query, summarise_rows
from shared.runtime.settings import Settings
from shared.runtime.table_views import register_table_views

TABLES = ("results", "rows", "strata", "buckets", "privacy")
#: Keyed by ad account data (account, date, campaign...), shown as they are;
#: ``results`` is keyed by conversion_key, shown as a hash.
ACCOUNT_KEYED = ("rows", "strata", "buckets", "privacy")


def register(app: faust.App, settings: Settings) -> None:
    rows: Any = app.tables["rows"]
    register_table_views(app, settings, *TABLES, safe_keys=ACCOUNT_KEYED)
    console_view.register(app, settings)

    @app.page("/reports")
    async def reports(web: Any, request: Any) -> Any:
        try:
            parse_query(dict(request.query))
        except QueryError as exc:
            return web.json({"error": str(exc)}, status=400)
        return await routed_report(web, request)

    @app.table_route(table=rows, query_param="ad_account_id")
    async def routed_report(web: Any, request: Any) -> Any:
        """Runs on the worker that owns the account's partition (Faust forwards)."""
        query = parse_query(dict(request.query))
        prefix = orjson.dumps([query.ad_account_id]).decode()[:-1] + ","
        found = []
        for key, raw in rows.items():
            text = key.decode()
            if text.startswith(prefix):
                found.append((text, orjson.loads(raw)))
        return web.json(summarise_rows(query, found))
