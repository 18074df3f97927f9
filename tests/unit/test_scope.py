"""scope.EndpointScope: which requests a run signs."""

from __future__ import annotations

import pytest

from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.scope import EndpointScope


def test_exact_endpoint_trailing_slash_and_query_match() -> None:
    scope = EndpointScope("http://127.0.0.1:8000/mcp")
    for url in ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp/", "HTTP://127.0.0.1:8000/mcp?x=1"):
        endpoint = scope.match(url)
        assert endpoint is not None and endpoint.url == "http://127.0.0.1:8000/mcp"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/mcp",  # other port
        "https://127.0.0.1:8000/mcp",  # other scheme
        "http://localhost:8000/mcp",  # other host
        "http://127.0.0.1:8000/mcp/extra",
        "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp",
        "http://127.0.0.1:8000/.well-known/oauth-authorization-server",
        "http://127.0.0.1:8000/token",
        "http://127.0.0.1:8000/register",
        "http://127.0.0.1:8000/",
        "not a url",
        "ftp://127.0.0.1:8000/mcp",
    ],
)
def test_everything_else_is_out_of_scope(url: str) -> None:
    assert EndpointScope("http://127.0.0.1:8000/mcp").match(url) is None


def test_default_ports_are_normalised() -> None:
    scope = EndpointScope("https://mcp.example/mcp")
    assert scope.match("https://MCP.example:443/mcp") is not None
    assert scope.match("http://mcp.example/mcp") is None


def test_legacy_sse_endpoint_covers_its_messages_path() -> None:
    scope = EndpointScope("http://127.0.0.1:8000/app/sse")
    assert scope.match("http://127.0.0.1:8000/app/sse") is not None
    assert scope.match("http://127.0.0.1:8000/app/messages/?session_id=abc") is not None
    assert scope.match("http://127.0.0.1:8000/messages/") is None


def test_several_endpoints() -> None:
    scope = EndpointScope(["http://a.example/mcp", "http://b.example/other"])
    assert scope.match("http://b.example/other").url == "http://b.example/other"  # type: ignore[union-attr]
    assert scope.urls == ["http://a.example/mcp", "http://b.example/other"]


@pytest.mark.parametrize(
    "bad", [[], "", "relative/path", "http://user:pw@a.example/mcp", "http://a.example/mcp#frag", "file:///x"]
)
def test_bad_endpoints_are_configuration_errors(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        EndpointScope(bad)  # type: ignore[arg-type]
