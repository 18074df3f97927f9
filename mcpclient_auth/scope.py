"""The scope guard: which requests a run signs (pure: no I/O, no httpx).

A run acts only on requests to its configured MCP endpoint(s) — same origin (scheme, host, port) and
same path (a trailing slash aside). Everything else on the same client — other origins, OAuth
discovery, registration and token requests on the same origin — passes untouched.

    >>> scope = EndpointScope(["http://127.0.0.1:8000/mcp"])
    >>> scope.match("http://127.0.0.1:8000/mcp/?x=1").url
    'http://127.0.0.1:8000/mcp'
    >>> scope.match("http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp") is None
    True

An endpoint whose path ends in ``/sse`` (the legacy HTTP+SSE transport) also covers the sibling
``/messages/`` path that the server names in its ``endpoint`` event, where the client POSTs its
messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["Endpoint", "EndpointScope", "origin_and_path"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LEGACY_SSE_SUFFIX = "/sse"
_LEGACY_MESSAGES = "/messages"


def origin_and_path(url: str) -> tuple[tuple[str, str, int], str]:
    """``((scheme, host, port), path)`` with lowercase scheme/host, explicit port, no trailing slash.

    Raises :class:`ValueError` for a URL that is not absolute ``http``/``https``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    return (scheme, parts.hostname.lower(), port), _normal_path(parts.path)


def _normal_path(path: str) -> str:
    path = path or "/"
    return path.rstrip("/") or "/"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One configured MCP endpoint: its URL as given (without query) and the paths it covers."""

    url: str
    origin: tuple[str, str, int]
    paths: frozenset[str]


def _endpoint(url: str) -> Endpoint:
    if not isinstance(url, str) or not url:
        raise ConfigurationError("an MCP endpoint must be a non-empty URL string")
    try:
        origin, path = origin_and_path(url)
    except ValueError:
        raise ConfigurationError(f"MCP endpoint {url!r} is not an absolute http(s) URL") from None
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("an MCP endpoint URL must not carry credentials (userinfo)")
    if parts.fragment:
        raise ConfigurationError("an MCP endpoint URL must not have a fragment")
    paths = {path}
    if path.endswith(_LEGACY_SSE_SUFFIX):
        paths.add(_normal_path(path[: -len(_LEGACY_SSE_SUFFIX)] + _LEGACY_MESSAGES))
    bare = parts._replace(query="", fragment="").geturl()
    return Endpoint(url=bare, origin=origin, paths=frozenset(paths))


class EndpointScope:
    """The set of endpoints a run signs for; :meth:`match` is the scope guard's question."""

    def __init__(self, endpoints: str | Sequence[str]) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ConfigurationError("a run needs at least one MCP endpoint")
        self.endpoints: tuple[Endpoint, ...] = tuple(_endpoint(url) for url in urls)
        self._index: dict[tuple[tuple[str, str, int], str], Endpoint] = {}
        for endpoint in self.endpoints:
            for path in endpoint.paths:
                self._index.setdefault((endpoint.origin, path), endpoint)

    def __repr__(self) -> str:
        return f"EndpointScope({[e.url for e in self.endpoints]!r})"

    @property
    def urls(self) -> list[str]:
        return [endpoint.url for endpoint in self.endpoints]

    def match(self, url: str) -> Endpoint | None:
        """The endpoint ``url`` belongs to, or ``None`` when the request is out of scope."""
        try:
            key = origin_and_path(url)
        except ValueError:
            return None
        return self._index.get(key)
