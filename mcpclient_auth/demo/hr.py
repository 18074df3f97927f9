"""The sample HR MCP server: FastMCP tools behind :class:`~mcpclient_auth.server.McpAuthMiddleware`.

    app = hr_app(trust, audience="http://127.0.0.1:8000/mcp", ledger="server-ledger.jsonl")
    uvicorn.run(app, host="127.0.0.1", port=8000)

Tools: ``get_office_locations`` (any verified mandate), ``search`` (the HR handbook) and
``get_employee_salary`` — the middleware lets a call through only when the mandate's ``cap`` holds
``mcp.get_employee_salary``, and the tool reports which user (mandate ``iss``) asked.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_http_request
from starlette.middleware import Middleware

from ..keys import TrustStore
from ..ledger import Ledger
from ..server import McpAuthMiddleware, verified_request

__all__ = ["OFFICES", "SALARIES", "build_hr_server", "hr_app"]

OFFICES = ["Berlin", "Lisbon", "Toronto"]
SALARIES = {"bob": 98_000, "carol": 105_000}


class _QuietShutdown(logging.Filter):
    # mcp's server logs a traceback when a client ends its session while the server's standalone SSE
    # stream is still open; harmless at shutdown, it would only clutter the samples' output.
    def filter(self, record: logging.LogRecord) -> bool:
        return "standalone SSE writer" not in record.getMessage()


logging.getLogger("mcp.server.streamable_http").addFilter(_QuietShutdown())


def _asked_by() -> str | None:
    verified = verified_request(get_http_request())
    return verified.principal if verified is not None else None


def build_hr_server(name: str = "hr") -> FastMCP:
    """The HR tools on a fresh FastMCP instance (no authentication of its own)."""
    mcp: FastMCP = FastMCP(name)

    @mcp.tool
    def get_office_locations() -> list[str]:
        """List the company's offices."""
        return list(OFFICES)

    @mcp.tool
    def search(query: str) -> str:
        """Search the HR handbook."""
        return f"3 handbook pages mention {query!r}"

    @mcp.tool
    def get_employee_salary(employee: str) -> dict[str, Any]:
        """An employee's yearly salary (sensitive: needs the mcp.get_employee_salary capability)."""
        return {"employee": employee, "salary": SALARIES.get(employee.lower(), 0), "asked_by": _asked_by()}

    return mcp


def hr_app(
    trust: TrustStore,
    *,
    audience: str,
    ledger: Ledger | str | os.PathLike[str] | None = None,
    mcp: FastMCP | None = None,
    **middleware_options: Any,
) -> Any:
    """The HR server's ASGI app at ``/mcp``, every request verified against ``trust`` and ``audience``.

    ``trust`` needs roles (``TrustRolesMissing`` here, not at the first request: Starlette builds its
    middleware lazily)."""
    trust.require_roles()
    server = mcp if mcp is not None else build_hr_server()
    middleware = Middleware(
        McpAuthMiddleware, trust=trust, audience=audience, ledger=ledger, **middleware_options
    )
    return server.http_app(path="/mcp", middleware=[middleware])
