"""The advertiser API of aggregate's workers (docs/api.md).

* ``GET /v5/ad_accounts/{ad_account_id}/reports?from=&to=&level=&lane=``
  (``Accept: text/csv`` for CSV; ``GET /reports?ad_account_id=...`` is an alias)
* ``GET /v5/ad_accounts/{ad_account_id}/events/diagnostics``

Both take the account's own Conversions API token (``Authorization: Bearer``):
none or unknown -> 401 ``{code: 2}``, another account's -> 403 ``{code: 29}``,
as the Conversions API. A request for an account whose partition another
worker owns is forwarded to it (``table_route``; the header goes along and is
checked again there). Reads are prefix reads of the account's keys
(``store_reads``), off the event loop.

``diagnostics_json(app, account)`` is the same diagnostics for the operator
console (no token: the console has its own operator check).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import faust
import orjson
from faust.web import View

from services.aggregate import diagnostics_summary, report_query
from services.aggregate.store_reads import prefix_items
from shared.kafka.api_tokens import TokenReader
from shared.runtime.settings import Settings

CODE_AUTH = 2
CODE_FORBIDDEN = 29
CODE_NOT_READY = 4197
REPORTS = "/v5/ad_accounts/{ad_account_id}/reports"
DIAGNOSTICS = "/v5/ad_accounts/{ad_account_id}/events/diagnostics"


def refusal(reader: TokenReader, authorization: str | None, account: str) -> tuple[int, Any] | None:
    """(status, body) when the request may not read ``account``; None when it may."""
    if not reader.ready.is_set():
        return 503, {"code": CODE_NOT_READY, "message": "Tokens are still loading; retry."}
    token = ""
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[len("bearer ") :].strip()
    record = reader.verify(token) if token else None
    if record is None:
        return 401, {"code": CODE_AUTH, "message": "Authentication failed."}
    if record.ad_account_id != account:
        return 403, {
            "code": CODE_FORBIDDEN,
            "message": "You are not permitted to access that resource.",
        }
    return None


async def read_report(app: faust.App, settings: Settings, query: report_query.ReportQuery) -> Any:
    """The report of one account from this worker's partition stores."""
    account = query.ad_account_id
    if query.lane == "modeled":
        strata = await asyncio.to_thread(
            prefix_items, app.tables["strata"], account, query.colon_prefix()
        )
        decoded = [(k.decode(), orjson.loads(v)) for k, v in strata]
        return report_query.summarise_strata(query, decoded, settings.privacy_k)
    if query.lane == "protected":
        tables: Any = app.tables
        raw = tables["privacy"].get(account.encode())
        return report_query.summarise_releases(query, orjson.loads(raw) if raw else None)
    rows = await asyncio.to_thread(prefix_items, app.tables["rows"], account, query.row_prefix())
    decoded = [(k.decode(), orjson.loads(v)) for k, v in rows]
    return report_query.summarise_rows(query, decoded)


async def diagnostics_json(app: faust.App, account: str, now_ms: int | None = None) -> Any:
    """The setup diagnostics of ``account`` (for the API and the operator console).

    Local read: call it on the worker that owns the account's partition.
    """
    found = await asyncio.to_thread(
        prefix_items, app.tables["diagnostics"], account, f"{account}:".encode()
    )
    buckets = {k.decode().split(":", 1)[1]: orjson.loads(v) for k, v in found}
    now = (
        dt.datetime.now(dt.UTC)
        if now_ms is None
        else dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    )
    return diagnostics_summary.summarise(account, now.date().isoformat(), buckets)


def register(app: faust.App, settings: Settings) -> None:
    reader = TokenReader(settings)
    rows: Any = app.tables["rows"]
    diagnostics: Any = app.tables["diagnostics"]
    web_app = app.web.web_app  # type: ignore[attr-defined]  # the aiohttp driver's Application
    #: Faust types route handlers as (view, request) only; ours take match_info too.
    table_route: Any = app.table_route

    async def start(_web_app: Any) -> None:
        await reader.start()

    async def stop(_web_app: Any) -> None:
        await reader.stop()

    web_app.on_startup.append(start)
    web_app.on_cleanup.append(stop)

    async def answer_report(view: View, request: Any, account: str) -> Any:
        refused = refusal(reader, request.headers.get("Authorization"), account)
        if refused is not None:
            return view.json(refused[1], status=refused[0])
        try:
            query = report_query.parse_query({**dict(request.query), "ad_account_id": account})
        except report_query.QueryError as exc:
            return view.json({"code": 1, "message": str(exc)}, status=400)
        report = await read_report(app, settings, query)
        if "text/csv" in request.headers.get("Accept", ""):
            return view.text(report_query.to_csv(report), content_type="text/csv")
        return view.json(report)

    @app.page(REPORTS)
    class Reports(View):
        @table_route(table=rows, match_info="ad_account_id")  # type: ignore[untyped-decorator]
        async def get(self, request: Any, ad_account_id: str) -> Any:
            return await answer_report(self, request, ad_account_id)

    @app.page("/reports")
    class ReportsAlias(View):
        """The old path: ``?ad_account_id=``, same token rules."""

        async def get(self, request: Any) -> Any:
            account = request.query.get("ad_account_id", "")
            if not account.isdigit():
                return self.json(
                    {"code": 1, "message": "ad_account_id (digits) is required"}, status=400
                )
            return await self.routed(request)

        @table_route(table=rows, query_param="ad_account_id")  # type: ignore[untyped-decorator]
        async def routed(self, request: Any) -> Any:
            return await answer_report(self, request, request.query["ad_account_id"])

    @app.page(DIAGNOSTICS)
    class Diagnostics(View):
        @table_route(table=diagnostics, match_info="ad_account_id")  # type: ignore[untyped-decorator]
        async def get(self, request: Any, ad_account_id: str) -> Any:
            refused = refusal(reader, request.headers.get("Authorization"), ad_account_id)
            if refused is not None:
                return self.json(refused[1], status=refused[0])
            return self.json(await diagnostics_json(app, ad_account_id))

    app.conf.convmesh_diagnostics = diagnostics_json
