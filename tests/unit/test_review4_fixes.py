"""Regressions found by the adversarial reviews of issue #16's optimisations (session 4).

Each test fails on the optimised code as it first landed and passes with the fix:
- review 5, F1: ``McpAuthMiddleware.paths`` reassigned after construction left the new paths unprotected
  (the per-request lookups were copied once in ``__init__``);
- review 5, I1: a tracker's ``StopAsyncIteration`` (or ``GeneratorExit``) from ``feed`` passed for a clean,
  truncated end of the body once the response stream became an iterator class;
- found by the lead while rereading that fix (older than #16): ``paths=("/",)`` protected "/" alone,
  since its "below" prefix was "//".
(Review 4's finding, the body read outside the deadline's scope, is in ``test_server_read_body.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpclient_auth._hooks.streams import AsyncHashingStream
from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.keys import Identity
from mcpclient_auth.server.middleware import McpAuthMiddleware
from tests.support.trust import trust_for

AGENT = Identity.generate("ES256", name="agent")


async def _tool(request: Request) -> Response:
    return JSONResponse({"tool": "ran"})


def _middleware() -> McpAuthMiddleware:
    routes = [Route("/mcp", _tool, methods=["POST"]), Route("/admin/{rest:path}", _tool, methods=["POST"])]
    return McpAuthMiddleware(Starlette(routes=routes), trust=trust_for(agents=[AGENT]), audience="http://t/mcp")


async def _post(app: McpAuthMiddleware, path: str) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post(path, content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    return response.status_code


async def test_paths_assigned_after_construction_are_protected_at_once() -> None:
    middleware = _middleware()
    assert await _post(middleware, "/admin/x") == 200  # not protected yet: the app answers
    middleware.paths = ("/mcp", "/admin/")
    assert middleware.paths == ("/mcp", "/admin")  # normalised as the constructor does
    for path in ("/mcp", "/admin", "/admin/x"):
        assert await _post(middleware, path) == 401, path


async def test_the_root_path_protects_everything_below_it() -> None:
    # "The protected paths and everything below them": "/" is every path (its "below" prefix was
    # "//" once, which left every path but "/" itself unprotected).
    middleware = _middleware()
    middleware.paths = ("/",)
    for path in ("/", "/mcp", "/admin/x"):
        assert await _post(middleware, path) == 401, path


def test_paths_given_as_one_string_are_refused() -> None:
    middleware = _middleware()
    with pytest.raises(ConfigurationError):
        middleware.paths = "/mcp"  # type: ignore[assignment]
    assert middleware.paths == ("/mcp",)


class _Inner:
    def __init__(self) -> None:
        self.closed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b", b"c"):
            yield chunk

    async def aclose(self) -> None:
        self.closed += 1


class _Tracker:
    def __init__(self, raise_in_feed: BaseException) -> None:
        self.events: list[str] = []
        self._raise = raise_in_feed

    def feed(self, chunk: bytes) -> None:
        self.events.append(f"feed {chunk.decode()}")
        if chunk == b"b":
            raise self._raise

    def on_eof(self) -> None:
        self.events.append("eof")

    def on_close(self) -> None:
        self.events.append("close")

    def on_error(self, exc: BaseException) -> None:
        self.events.append(f"error {type(exc).__name__}")


async def test_a_tracker_raising_stop_async_iteration_is_a_failure_not_the_end_of_the_body() -> None:
    tracker = _Tracker(StopAsyncIteration())
    stream = AsyncHashingStream(_Inner(), tracker)
    received = []
    with pytest.raises(RuntimeError):
        async for chunk in stream:
            received.append(chunk)
    # the body is not reported complete, and the consumer never sees a clean (truncated) end
    assert tracker.events == ["feed a", "feed b", "error StopAsyncIteration"]
    assert received == [b"a"]


async def test_a_tracker_raising_generator_exit_reports_nothing_as_the_generator_did() -> None:
    tracker = _Tracker(GeneratorExit())
    stream = AsyncHashingStream(_Inner(), tracker)
    with pytest.raises(GeneratorExit):
        async for _ in stream:
            pass
    assert tracker.events == ["feed a", "feed b"]
