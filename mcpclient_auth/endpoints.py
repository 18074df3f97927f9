"""The endpoint guard: which requests a run signs, lets pass or refuses (pure: no I/O, no httpx).

**One canonical endpoint string.** :func:`canonical_url` normalises an endpoint exactly as httpx (and
its fork httpx2, whose URL parser is the same code) will send it: scheme and host lower-case, the
scheme's default port dropped, ``.``/``..`` segments removed (RFC 3986 §5.2.4, as httpx applies it),
an empty path sent as ``/``, and percent-encoding as httpx does it (existing ``%XX`` kept, everything
outside httpx's path-safe set encoded from UTF-8). That one string is the endpoint guard's key, the
mandate's and every ECT's ``aud``, the signature's ``wimse-aud`` and the ledger's ``url``, so a strict
verifier (RFC 7519 compares ``aud`` as exact strings) sees the same URI the request went to:

    >>> canonical_url("HTTP://LOCALHOST:8000/x/../mcp")
    'http://localhost:8000/mcp'
    >>> canonical_url("https://mcp.example:443")
    'https://mcp.example/'

An endpoint that cannot be normalised faithfully (userinfo, a fragment, a scheme other than http(s),
a non-ASCII host, an invalid port, control characters) is refused with :class:`EndpointInvalid`.
Why not call httpx's parser: this module stays free of I/O and HTTP libraries; the unit tests compare
:func:`canonical_url` with ``str(httpx.Request(...).url)`` and the httpx2 equivalent for every spelling
they use, and the request hook canonicalises the URL it is about to send again (so a divergence
would make the guard refuse, never sign for the wrong URI).

**Fail closed.** :meth:`EndpointSet.classify` sorts every request a run's client sends:

- to one of the endpoints (a trailing slash aside; the legacy ``/sse`` endpoint also covers its
  sibling ``/messages/``) -> signed;
- to another origin -> untouched (no credential, no signature, no ledger entry);
- to the run's origin but another path -> **refused**, unless it is OAuth discovery the guard
  recognises (``/.well-known/oauth-protected-resource…``, ``/.well-known/oauth-authorization-server…``,
  ``…/.well-known/openid-configuration…``), a ``resource_metadata`` URL a 401 from one of the
  endpoints named (:meth:`EndpointSet.learn_metadata_url`), or a token / registration endpoint
  named by authorization-server metadata that passed through the run's client
  (:meth:`EndpointSet.learn_server_metadata`).

    >>> endpoint_set = EndpointSet(["http://127.0.0.1:8000/mcp"])
    >>> endpoint_set.match("http://127.0.0.1:8000/mcp/?x=1").url
    'http://127.0.0.1:8000/mcp'
    >>> endpoint_set.classify("http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp").kind
    'oauth'
    >>> endpoint_set.classify("http://127.0.0.1:8000/admin").kind
    'refuse'
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError, EndpointInvalid

#: ``run.endpoint_set`` and its endpoints; the request hooks' helpers (``sent_url``,
#: ``MetadataCollector`` ...) serve the package only.
__all__ = ["Endpoint", "EndpointSet", "canonical_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LEGACY_SSE_SUFFIX = "/sse"
_LEGACY_MESSAGES = "/messages"

# httpx._urlparse's path percent-encode set (the WHATWG path set): these pass unencoded.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_QUERY_UNSAFE = (0x20, 0x22, 0x23, 0x3C, 0x3E)
_PATH_UNSAFE = (*_QUERY_UNSAFE, 0x3F, 0x60, 0x7B, 0x7D)
_PATH_SAFE = frozenset(_UNRESERVED + "".join(chr(i) for i in range(0x20, 0x7F) if i not in _PATH_UNSAFE))
_QUERY_SAFE = frozenset(_UNRESERVED + "".join(chr(i) for i in range(0x20, 0x7F) if i not in _QUERY_UNSAFE))
_PERCENT_ENCODED = re.compile("%[A-Fa-f0-9]{2}")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?")
_REG_NAME = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]+")
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")

#: OAuth discovery documents a run's client may fetch on the run's origin (RFC 9728, RFC 8414, OIDC).
_DISCOVERY_PREFIXES = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)
_OIDC_SUFFIX = "/.well-known/openid-configuration"  # OIDC's path-appended form: {issuer}/.well-known/...
#: Authorization-server metadata members naming endpoints a client POSTs to (RFC 8414 §2).
_SERVER_ENDPOINTS = ("token_endpoint", "registration_endpoint")
_MAX_LEARNED = 32
MAX_METADATA_BYTES = 64 * 1024

Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class _Parts:
    scheme: str
    host: str  # lower-case; an IPv6 literal without brackets
    port: int | None  # None = the scheme's default
    path: str
    query: str | None
    userinfo: bool = False

    @property
    def origin(self) -> Origin:
        return (self.scheme, self.host, self.port if self.port is not None else _DEFAULT_PORTS[self.scheme])

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def url(self, *, query: bool = False) -> str:
        tail = f"?{self.query}" if query and self.query is not None else ""
        return f"{self.scheme}://{self.netloc}{self.path}{tail}"


def _quote(text: str, safe: frozenset[str]) -> str:
    """Percent-encode like httpx: existing ``%XX`` sequences are kept, other unsafe characters are
    encoded from UTF-8 with upper-case hex."""
    out: list[str] = []
    position = 0
    for match in _PERCENT_ENCODED.finditer(text):
        out.append(_encode(text[position : match.start()], safe))
        out.append(match.group(0))
        position = match.end()
    out.append(_encode(text[position:], safe))
    return "".join(out)


def _encode(text: str, safe: frozenset[str]) -> str:
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 as httpx applies it (segment-wise; a trailing ``.``/``..`` leaves no slash)."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    output: list[str] = []
    for segment in segments:
        if segment == ".":
            continue
        if segment == "..":
            if output and output != [""]:
                output.pop()
            continue
        output.append(segment)
    return "/".join(output)


def _host(raw: str) -> str:
    if raw.startswith("[") and raw.endswith("]"):
        try:
            ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise ValueError("an invalid IPv6 literal") from None
        return raw[1:-1]  # as httpx keeps it (not re-compressed, case kept)
    if not raw:
        raise ValueError("no host")
    if not raw.isascii():
        # httpx encodes IDNA 2008 with the `idna` package; rather than risk a different A-label,
        # ask for the one the caller means.
        raise ValueError("a non-ASCII host (give its ASCII 'xn--' form)")
    if _IPV4_STYLE.fullmatch(raw):
        try:
            ipaddress.IPv4Address(raw)
        except ValueError:
            raise ValueError("an invalid IPv4 address") from None
    elif not _REG_NAME.fullmatch(raw):
        raise ValueError("a host with characters outside RFC 3986 reg-name")
    return raw.lower()


def _parse(url: object, *, strict: bool) -> _Parts:
    """Split and normalise ``url``; ``strict`` also refuses userinfo and fragments (endpoint configuration).

    Raises :class:`ValueError` naming what is wrong (never echoing the URL: it may hold userinfo).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("not a non-empty string")
    return _parse_text(url, strict)


@functools.lru_cache(maxsize=512)
def _parse_text(url: str, strict: bool) -> _Parts:
    # Cached: a run's requests repeat a handful of URLs (the parts are immutable; errors not cached).
    if any(c.isascii() and not c.isprintable() for c in url):
        raise ValueError("control characters or whitespace")
    if strict and "#" in url:
        raise ValueError("a fragment")
    match = _URL.match(url)
    if match is None:
        raise ValueError("not an absolute http(s) URL")
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("a scheme other than http or https")
    authority = match["authority"]
    _, at, hostport = authority.rpartition("@")
    if at:
        if strict:
            raise ValueError("userinfo (credentials in the URL)")
        authority = hostport
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("an unterminated IPv6 literal")
        raw_host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("text after the IPv6 literal")
        raw_port = rest[1:] if rest else ""
    else:
        raw_host, _, raw_port = authority.partition(":")
    port: int | None = None
    if raw_port:
        if not raw_port.isdigit() or not raw_port.isascii() or not 0 < int(raw_port) < 65536:
            raise ValueError("an invalid port")
        port = int(raw_port)
        if port == _DEFAULT_PORTS[scheme]:
            port = None
    path = _quote(_remove_dot_segments(match["path"]), _PATH_SAFE) or "/"
    query = match["query"]
    encoded_query = None if query is None else _quote(query, _QUERY_SAFE)
    return _Parts(scheme, _host(raw_host), port, path, encoded_query, userinfo=bool(at))


def canonical_url(url: str, *, query: bool = False) -> str:
    """``url`` exactly as httpx/httpx2 send it (module docstring); the query is dropped unless ``query``.

    Raises :class:`~mcpclient_auth.errors.EndpointInvalid` for a URL that cannot be normalised
    faithfully (userinfo, fragment, scheme, non-ASCII host, port, control characters).
    """
    try:
        return _parse(url, strict=True).url(query=query)
    except ValueError as exc:
        raise EndpointInvalid(f"MCP endpoint URL refused: {exc}", reason=str(exc)) from None


def sent_url(url: str) -> str:
    """A request URL (query kept) in the canonical form; :class:`ValueError` if not absolute http(s).

    Equal to ``str(request.url)`` for what httpx builds, except where httpx keeps a spelling that
    means the same URI (an upper-case scheme keeps an explicit default port): the request hook then
    sends this form, so the URI on the wire is the one the tokens name.
    """
    return _parse(url, strict=False).url(query=True)


def origin_and_path(url: str) -> tuple[Origin, str]:
    """``((scheme, host, port), path)`` of a request URL: normalised, explicit port, no trailing slash.

    Raises :class:`ValueError` for a URL that is not absolute ``http``/``https``.
    """
    parts = _parse(url, strict=False)
    return parts.origin, _normal_path(parts.path)


def _normal_path(path: str) -> str:
    return path.rstrip("/") or "/"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One configured MCP endpoint: its canonical URL (no query) and the paths it covers."""

    url: str
    origin: Origin
    paths: frozenset[str]


@dataclass(frozen=True, slots=True)
class EndpointVerdict:
    """What the guard does with one request URL.

    ``kind``: ``"endpoint"`` (sign it for :attr:`endpoint`), ``"oauth"`` (OAuth discovery / token /
    registration on the run's origin: pass untouched), ``"other"`` (another origin: pass untouched),
    ``"refuse"`` (the run's origin, no endpoint: refuse). ``metadata`` is true for an
    authorization-server metadata document whose endpoints the guard should learn.
    """

    kind: Literal["endpoint", "oauth", "other", "refuse"]
    endpoint: Endpoint | None = None
    metadata: bool = False


_OTHER = EndpointVerdict("other")
_REFUSE = EndpointVerdict("refuse")
_OAUTH = EndpointVerdict("oauth")
_SERVER_METADATA = EndpointVerdict("oauth", metadata=True)


def _endpoint(url: str) -> Endpoint:
    if not isinstance(url, str) or not url:
        raise EndpointInvalid("an MCP endpoint must be a non-empty URL string", reason="empty")
    canonical = canonical_url(url)
    parts = _parse(canonical, strict=True)
    path = _normal_path(parts.path)
    paths = {path}
    if path.endswith(_LEGACY_SSE_SUFFIX):
        paths.add(_normal_path(path[: -len(_LEGACY_SSE_SUFFIX)] + _LEGACY_MESSAGES))
    return Endpoint(url=canonical, origin=parts.origin, paths=frozenset(paths))


def _discovery_kind(path: str) -> EndpointVerdict | None:
    if path.startswith(_DISCOVERY_PREFIXES[0]):
        return _OAUTH
    if path.startswith(_DISCOVERY_PREFIXES[1:]) or _OIDC_SUFFIX in path:
        return _SERVER_METADATA
    return None


class EndpointSet:
    """The set of endpoints a run signs for; :meth:`classify` is the endpoint guard's question."""

    def __init__(self, endpoints: str | Sequence[str]) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ConfigurationError("a run needs at least one MCP endpoint")
        self.endpoints: tuple[Endpoint, ...] = tuple(_endpoint(url) for url in urls)
        self._index: dict[tuple[Origin, str], Endpoint] = {}
        for endpoint in self.endpoints:
            for path in endpoint.paths:
                self._index.setdefault((endpoint.origin, path), endpoint)
        self.origins: frozenset[Origin] = frozenset(e.origin for e in self.endpoints)
        # One verdict object per endpoint path, built here: classify() runs once or twice per request.
        self._verdicts = {key: EndpointVerdict("endpoint", endpoint) for key, endpoint in self._index.items()}
        # Token / registration endpoints learned from server metadata: replaced, never mutated, so
        # readers on other threads see a consistent set without taking the lock.
        self._learned: frozenset[tuple[Origin, str]] = frozenset()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EndpointSet({[e.url for e in self.endpoints]!r})"

    @property
    def urls(self) -> list[str]:
        return [endpoint.url for endpoint in self.endpoints]

    def match(self, url: str) -> Endpoint | None:
        """The endpoint ``url`` belongs to, or ``None`` when the request is not one to sign."""
        return self.classify(url).endpoint

    def classify(self, url: str) -> EndpointVerdict:
        """Sort a request URL (see the module docstring)."""
        try:
            parts = _parse(url, strict=False)
        except ValueError:
            return _OTHER  # httpx would not send it either; nothing of ours goes on it
        origin, path = parts.origin, _normal_path(parts.path)
        if origin not in self.origins:
            return _OTHER
        if parts.userinfo:
            return _REFUSE  # credentials in a URL to the run's origin: neither sign nor send
        verdict = self._verdicts.get((origin, path))
        if verdict is not None:
            return verdict
        discovery = _discovery_kind(path)
        if discovery is not None:
            return discovery
        if (origin, path) in self._learned:
            return _OAUTH
        return _REFUSE

    def learn_metadata_url(self, url: str) -> None:
        """Remember the RFC 9728 ``resource_metadata`` URL a 401 from one of the endpoints named, when
        it is on one of the run's origins (a client's OAuth flow then fetches it untouched)."""
        try:
            parts = _parse(url, strict=True)
        except ValueError:
            return
        self._learn({(parts.origin, _normal_path(parts.path))})

    def learn_server_metadata(self, document: bytes) -> None:
        """Remember the token and registration endpoints an authorization server's metadata names,
        when they are on one of the run's origins (requests to them then pass untouched). Anything
        unparsable is ignored: the guard then refuses those paths, it never opens wider."""
        if len(document) > MAX_METADATA_BYTES:
            return
        try:
            data = json.loads(document)
        except (ValueError, RecursionError):
            return
        if not isinstance(data, dict):
            return
        found: set[tuple[Origin, str]] = set()
        for member in _SERVER_ENDPOINTS:
            value = data.get(member)
            if not isinstance(value, str):
                continue
            try:
                parts = _parse(value, strict=True)
            except ValueError:
                continue
            found.add((parts.origin, _normal_path(parts.path)))
        self._learn(found)

    def _learn(self, found: set[tuple[Origin, str]]) -> None:
        # Only paths on the run's origins matter (others pass anyway); an endpoint is never unsigned.
        found = {key for key in found if key[0] in self.origins and key not in self._index}
        if found:
            with self._lock:
                if len(self._learned) + len(found) <= _MAX_LEARNED:
                    self._learned = self._learned | found


class MetadataCollector:
    """Collects an authorization-server metadata document (bounded) as the client reads it, and lets
    the run's endpoint set learn its token / registration endpoints at the end. The request hooks feed
    it through their hashing stream wrapper (the same ``feed`` / ``on_eof`` / ``on_close`` /
    ``on_error`` calls as a call's response tracker)."""

    __slots__ = ("_chunks", "_endpoint_set", "_size")

    def __init__(self, endpoint_set: EndpointSet) -> None:
        self._endpoint_set = endpoint_set
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= MAX_METADATA_BYTES:
            self._chunks.append(chunk)

    def on_eof(self) -> None:
        if self._size <= MAX_METADATA_BYTES:
            self._endpoint_set.learn_server_metadata(b"".join(self._chunks))
        self._chunks = []

    def on_close(self) -> None:
        self._chunks = []

    def on_error(self, exc: BaseException) -> None:
        self._chunks = []
