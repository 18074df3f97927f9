"""httpx clients that carry a run's hooks: the mcp client-factory shape, and ``install()``.

    factory = run.httpx_client_factory()                  # == httpx_client_factory(run)
    async with streamablehttp_client(url, httpx_client_factory=factory) as (read, write, _):
        ...
    MultiServerMCPClient({"hr": {"transport": "streamable_http", "url": url,
                                 "httpx_client_factory": factory}})

    run.install(my_async_client)                          # an existing httpx.AsyncClient or httpx.Client

The factory has mcp's ``McpHttpClientFactory`` shape — ``(headers=None, timeout=None, auth=None,
**kwargs) -> httpx.AsyncClient`` — and tolerates extra keywords (fastmcp passes
``follow_redirects=True``). Default timeout: 30 s, 300 s for reads (SSE streams stay open). Hooks are
*appended* to any ``event_hooks`` given, never replacing them. An ``Authorization`` header in
``headers=`` is refused: the user's token must come from the run's token source.

Every transport of a factory-built client is wrapped (once: :func:`~._hooks.transports.wrap_transports`),
so that a refusal made by our request hook for a JSON-RPC request — and a final 401/403 of the auth
flow — is answered **locally**: HTTP 200, ``application/json``, a JSON-RPC error with code
-32003 and ``error.data.code`` = the stable error code — without touching the network. (In mcp 1.x an
exception raised in a hook tears down the whole session; a JSON-RPC error fails only that call.) The
wrapper also records an ``error`` ledger entry when the network request itself fails.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ._hooks import HttpLibrary, RunHooks, library_for, library_named, wrap_transports
from ._hooks.auth import check_installable, compose_auth
from .authz import SIGNING_HOOK_MARKER
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .run import AgentRun

__all__ = [
    "DEFAULT_TIMEOUT",
    "McpHttpClientFactory",
    "httpx2_client_factory",
    "httpx_client_factory",
    "install",
    "multi_run_client_factory",
]

#: mcp's defaults: 30 s for connect/write/pool, 300 s for reads (a server may hold an SSE stream open).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)


class McpHttpClientFactory(Protocol):
    """mcp's ``McpHttpClientFactory`` plus ``**kwargs`` (fastmcp, langchain-mcp-adapters)."""

    def __call__(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        auth: httpx.Auth | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient: ...


def _refuse_authorization_header(headers: Mapping[str, str] | None) -> None:
    if headers and any(str(name).lower() == "authorization" for name in headers):
        raise ConfigurationError(
            "an Authorization header in headers= is refused: the user's token must come from the run's "
            "token_source (and the mandate travels in ACT-Mandate)"
        )


def _merged_hooks(existing: Any, request_hook: Any, response_hook: Any) -> dict[str, list[Any]]:
    hooks: dict[str, list[Any]] = {"request": [], "response": []}
    if existing:
        for kind in ("request", "response"):
            hooks[kind].extend(existing.get(kind, ()))
    hooks["request"].append(request_hook)
    hooks["response"].append(response_hook)
    return hooks


def httpx_client_factory(run: AgentRun | None, *, answer_locally: bool = True) -> McpHttpClientFactory:
    """A client factory for ``run`` (``None``: a multi-run factory that relies on :func:`use_run`).

    ``answer_locally=False`` makes refusals raise the typed exception instead (plain httpx use).
    """
    library = library_named("httpx")
    factory: McpHttpClientFactory = _client_factory(library, run, answer_locally=answer_locally)
    return factory


def httpx2_client_factory(run: AgentRun | None, *, answer_locally: bool = True) -> Any:
    """:func:`httpx_client_factory` for httpx2 (mcp 2.x, fastmcp 4): the factory returns an
    ``httpx2.AsyncClient`` (imported on first use) carrying the same hooks.

        client = httpx2_client_factory(run)()
        async with client, Client(streamable_http_client(url, http_client=client)) as mcp: ...
        StreamableHttpTransport(url, httpx_client_factory=httpx2_client_factory(run))   # fastmcp 4
    """
    return _client_factory(library_named("httpx2"), run, answer_locally=answer_locally)


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    """The system's default verifying context (what httpx builds per client), built once."""
    return ssl.create_default_context()


def _client_factory(library: HttpLibrary, run: AgentRun | None, *, answer_locally: bool) -> Any:
    """The one factory body, for either library (the hooks and transports come from ``library``)."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: Any = None,
        auth: Any = None,
        **kwargs: Any,
    ) -> Any:
        _refuse_authorization_header(headers)
        auth = compose_auth(run, auth, library=library.name)  # 401/403 handling; refuses a 2nd auth
        hooks = RunHooks(run, answer_locally=answer_locally, library=library)
        event_hooks = _merged_hooks(kwargs.pop("event_hooks", None), hooks.on_request, hooks.on_response)
        if "verify" not in kwargs:
            # Building an SSL context costs ~25 ms of CPU, and langchain-mcp-adapters asks for a new
            # client on every tool call: share one default context (it is read-only once built).
            kwargs["verify"] = _default_ssl_context()
        client = library.async_client(
            headers=headers,
            timeout=library.default_timeout() if timeout is None else timeout,
            auth=auth,
            event_hooks=event_hooks,
            **kwargs,
        )
        if answer_locally:
            wrap_transports(client, hooks)  # refusals and final 401/403s answered locally
        else:
            hooks.bind(client)
        return client

    return factory


def multi_run_client_factory(*, answer_locally: bool = True) -> McpHttpClientFactory:
    """A factory whose clients act for whichever run :func:`~mcpclient_auth._hooks.use_run` selects."""
    return httpx_client_factory(None, answer_locally=answer_locally)


def install(client: Any, run: AgentRun | None, *, answer_locally: bool = False) -> RunHooks:
    """Append ``run``'s hooks to an existing client (async or sync, httpx or httpx2); returns the hooks.

    With ``answer_locally=True`` the client's transports are wrapped as in the factory, so refusals of
    JSON-RPC requests come back as local JSON-RPC errors; by default they raise the typed exception.
    """
    try:
        library = library_for(client)
    except ConfigurationError:
        library = None
    if library is None or not isinstance(client, library.async_client | library.sync_client):
        raise ConfigurationError("install() takes an httpx/httpx2 AsyncClient or Client")
    existing = client.event_hooks
    if any(getattr(hook, SIGNING_HOOK_MARKER, False) for hook in existing.get("request", [])):
        raise ConfigurationError("this client already carries mcpclient-auth hooks")
    check_installable(client, run)  # adds RunAuth (async or sync) for a run with token sources
    hooks = RunHooks(run, answer_locally=answer_locally, library=library)
    if isinstance(client, library.async_client):
        client.event_hooks = _merged_hooks(existing, hooks.on_request, hooks.on_response)
    else:
        client.event_hooks = _merged_hooks(existing, hooks.on_request_sync, hooks.on_response_sync)
    if answer_locally:
        wrap_transports(client, hooks)
    else:
        hooks.bind(client)
    return hooks
