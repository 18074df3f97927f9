"""The one-command demo and the samples' building blocks (needs the ``demo`` extra).

    from mcpclient_auth.demo.hr import hr_app
    from mcpclient_auth.demo.serving import running
    from mcpclient_auth.demo.runner import run_demo

- :mod:`.hr`: the sample HR MCP server (FastMCP) behind :class:`~mcpclient_auth.server.McpAuthMiddleware`;
- :mod:`.serving`: serve an ASGI app on a free 127.0.0.1 port in a background thread;
- :mod:`.agent`: a LangGraph agent over ``MultiServerMCPClient`` with a scripted (or real) chat model;
- :mod:`.runner`: ``mcpclient-auth demo`` — keys, server, two runs, verified ledger, ``dag.html``.

Import the submodules you need: each pulls in its own third-party stack lazily.
"""

from __future__ import annotations

__all__: list[str] = []  # nothing here: the submodules are the surface
