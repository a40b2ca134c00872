"""The operator token on the services' web views.

Every view of a worker's web port except ``/health`` and ``/ready`` is an
operator view: it answers only a request that carries
``Authorization: Bearer <operator token>`` (``CONVMESH_OPERATOR_TOKEN``; the
development token in development mode), and 401 to any other. Register one
with ``operator_page(app, settings, path)`` instead of ``app.page(path)``.
A view that forwards with ``@app.table_route`` passes the header on with the
request, so the owning worker checks the same token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import faust
from faust.web import View

from shared.runtime.settings import Settings

BEARER = "bearer "


def bearer_token_matches(authorization: str | None, expected: str) -> bool:
    """True when an ``Authorization`` header carries exactly the bearer token ``expected``.

    Compared in constant time, so response timing says nothing about how much of
    a guess was right. With no token configured (``expected`` empty) nothing matches.
    """
    if not expected or not authorization or not authorization.lower().startswith(BEARER):
        return False
    given = authorization[len(BEARER) :].strip()
    return hmac.compare_digest(given.encode(), expected.encode())


def operator_view_base(token: str) -> type[View]:
    """A Faust View base class whose every method first checks the operator token."""

    class OperatorView(View):
        async def dispatch(self, request: Any) -> Any:
            if not bearer_token_matches(request.headers.get("Authorization"), token):
                return self.json(
                    {"error": "operator token required"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="convmesh-operator"'},
                )
            return await super().dispatch(request)

    return OperatorView


def operator_page(app: faust.App, settings: Settings, path: str) -> Callable[[Any], type[View]]:
    """Like ``app.page(path)``, for a view only operators may read."""
    return app.page(path, base=operator_view_base(settings.active_operator_token))
