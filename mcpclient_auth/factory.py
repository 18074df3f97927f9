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

Every transport of a factory-built client is wrapped, so that a refusal made by our request hook for
a JSON-RPC request is answered **locally**: HTTP 200, ``application/json``, a JSON-RPC error with code
-32003 and ``error.data.code`` = the stable error code — without touching the network. (In mcp 1.x an
exception raised in a hook tears down the whole session; a JSON-RPC error fails only that call.) The
wrapper also records an ``error`` ledger entry when the network request itself fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .authz._http import SIGNING_HOOK_MARKER
from .errors import ConfigurationError
from .hooks import EXTENSION_INFLIGHT, EXTENSION_REFUSAL, LocalRefusal, RunHooks, error_code_for
from .run import InFlight

if TYPE_CHECKING:
    from .run import AgentRun

__all__ = [
    "DEFAULT_TIMEOUT",
    "LocalAnswerTransport",
    "McpHttpClientFactory",
    "SyncLocalAnswerTransport",
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


def _local_response(request: httpx.Request, refusal: LocalRefusal) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "application/json", "x-mcpclient-auth-refusal": refusal.error.code},
        content=refusal.body,
        request=request,
    )


def _record_failure(request: httpx.Request, exc: BaseException) -> None:
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if isinstance(inflight, InFlight) and not inflight.finished:
        inflight.run._error(inflight, error_code_for(exc), type(exc).__name__)


def _refusal_for(request: httpx.Request, hooks: RunHooks) -> LocalRefusal | None:
    refusal = request.extensions.get(EXTENSION_REFUSAL)
    if isinstance(refusal, LocalRefusal) and refusal.hooks is hooks:
        return refusal
    return None


class LocalAnswerTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: answers refused requests locally; records network failures."""

    def __init__(self, inner: httpx.AsyncBaseTransport, hooks: RunHooks) -> None:
        self.inner = inner
        #: Read by :meth:`RunHooks._answers_locally`: this transport answers for these hooks.
        self.mcpclient_auth_hooks = hooks

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return await self.inner.handle_async_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncLocalAnswerTransport(httpx.BaseTransport):
    """The synchronous twin of :class:`LocalAnswerTransport`."""

    def __init__(self, inner: httpx.BaseTransport, hooks: RunHooks) -> None:
        self.inner = inner
        self.mcpclient_auth_hooks = hooks

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return self.inner.handle_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    def close(self) -> None:
        self.inner.close()


def _wrap_transports(client: httpx.AsyncClient | httpx.Client, hooks: RunHooks) -> None:
    """Wrap the client's default transport and every mounted one (proxies included).

    httpx keeps them in ``_transport`` and ``_mounts`` (stable since 0.24, pinned <1 here); if that
    ever changes we refuse to promise local answers rather than let a refused request go out.
    """
    transport = getattr(client, "_transport", None)
    mounts = getattr(client, "_mounts", None)
    if transport is None or not isinstance(mounts, dict):
        raise ConfigurationError("this httpx version does not expose its transports; cannot answer locally")
    wrap: Callable[[Any], Any]
    if isinstance(client, httpx.AsyncClient):

        def wrap(inner: Any) -> Any:
            return LocalAnswerTransport(inner, hooks)
    else:

        def wrap(inner: Any) -> Any:
            return SyncLocalAnswerTransport(inner, hooks)

    client._transport = wrap(transport)
    for pattern, mounted in list(mounts.items()):
        if mounted is not None:
            mounts[pattern] = wrap(mounted)
    hooks.bind(client)


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

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        auth: httpx.Auth | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient:
        _refuse_authorization_header(headers)
        hooks = RunHooks(run, answer_locally=answer_locally)
        event_hooks = _merged_hooks(kwargs.pop("event_hooks", None), hooks.on_request, hooks.on_response)
        client = httpx.AsyncClient(
            headers=headers,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            auth=auth,
            event_hooks=event_hooks,
            **kwargs,
        )
        if answer_locally:
            _wrap_transports(client, hooks)
        else:
            hooks.bind(client)
        return client

    return factory


def multi_run_client_factory(*, answer_locally: bool = True) -> McpHttpClientFactory:
    """A factory whose clients act for whichever run :func:`~mcpclient_auth.hooks.use_run` selects."""
    return httpx_client_factory(None, answer_locally=answer_locally)


def install(
    client: httpx.AsyncClient | httpx.Client, run: AgentRun | None, *, answer_locally: bool = False
) -> RunHooks:
    """Append ``run``'s hooks to an existing client (async or sync); returns the hooks.

    With ``answer_locally=True`` the client's transports are wrapped as in the factory, so refusals of
    JSON-RPC requests come back as local JSON-RPC errors; by default they raise the typed exception.
    """
    if not isinstance(client, httpx.AsyncClient | httpx.Client):
        raise ConfigurationError("install() takes an httpx.AsyncClient or httpx.Client")
    existing = client.event_hooks
    if any(getattr(hook, SIGNING_HOOK_MARKER, False) for hook in existing.get("request", [])):
        raise ConfigurationError("this client already carries mcpclient-auth hooks")
    hooks = RunHooks(run, answer_locally=answer_locally)
    if isinstance(client, httpx.AsyncClient):
        client.event_hooks = _merged_hooks(existing, hooks.on_request, hooks.on_response)
    else:
        if run is not None and run.token_source is not None:
            raise ConfigurationError(
                "a run with a token_source needs an httpx.AsyncClient (token sources are async)"
            )
        client.event_hooks = _merged_hooks(existing, hooks.on_request_sync, hooks.on_response_sync)
    if answer_locally:
        _wrap_transports(client, hooks)
    else:
        hooks.bind(client)
    return hooks
