"""RFC 8414 authorization server metadata, and the MCP discovery chain from a server URL to a token endpoint.

    meta = await fetch_authorization_server_metadata("https://idp.example.com/tenant1")
    meta.token_endpoint, meta.authorization_endpoint, meta.issuer

    found = await discover("https://mcp.example.com/mcp")            # RFC 9728, then RFC 8414
    found.resource.resource          # the resource indicator exactly as the PRM publishes it
    found.server.token_endpoint

Pure part (no I/O): :func:`metadata_urls` (the well-known URLs to try, in the MCP order: RFC 8414
path insertion, OpenID Connect path insertion, OpenID Connect path appending),
:func:`parse_authorization_server_metadata` (strict: ``issuer`` must be *identical* to the issuer the
URL was built from, RFC 8414 §3.3 — no normalisation, so metadata cannot rename its issuer),
:func:`resource_metadata_urls` and :func:`check_resource`. The fetches are thin: anonymous GETs, no
redirects, bounded bodies, 404 -> the next URL, any other failure ->
:class:`~mcpclient_auth.errors.ResourceMetadataError` /
:class:`~mcpclient_auth.errors.AuthorizationServerMetadataError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import AuthorizationServerMetadataError, ConfigurationError, ResourceMetadataError
from ._token_request import DEFAULT_TIMEOUT, check_endpoint, check_idp_client, default_http_client
from .resource_metadata import WELL_KNOWN_SUFFIX, ResourceMetadata, fetch_resource_metadata

__all__ = [
    "AuthorizationServerMetadata",
    "Discovered",
    "check_resource",
    "discover",
    "fetch_authorization_server_metadata",
    "metadata_urls",
    "parse_authorization_server_metadata",
    "resource_metadata_urls",
]

MAX_METADATA_BYTES = 64 * 1024
_OAUTH_SUFFIX = "/.well-known/oauth-authorization-server"
_OIDC_SUFFIX = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class AuthorizationServerMetadata:
    """The RFC 8414 members a client needs; ``raw`` keeps the whole document."""

    issuer: str
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    registration_endpoint: str | None = None
    scopes_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    #: RFC 9207 §3: the AS sends ``iss`` in every authorization response.
    authorization_response_iss_parameter_supported: bool = False
    #: draft-ietf-oauth-client-id-metadata-document: a URL may serve as ``client_id``.
    client_id_metadata_document_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Discovered:
    """What :func:`discover` found: the protected resource's metadata and its first AS's metadata."""

    resource: ResourceMetadata
    server: AuthorizationServerMetadata


def metadata_urls(issuer: str) -> list[str]:
    """The well-known URLs for ``issuer``, in the order the MCP authorization spec tries them.

    metadata_urls("https://as.example/tenant1")
    # ['https://as.example/.well-known/oauth-authorization-server/tenant1',
    #  'https://as.example/.well-known/openid-configuration/tenant1',
    #  'https://as.example/tenant1/.well-known/openid-configuration']
    """
    parts = urlsplit(check_endpoint(issuer, "issuer"))
    if parts.query or parts.fragment:
        raise ConfigurationError("an issuer identifier has no query or fragment (RFC 8414 §2)")
    path = parts.path.rstrip("/")

    def at(p: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, p, "", ""))

    if not path:
        return [at(_OAUTH_SUFFIX), at(_OIDC_SUFFIX)]
    return [at(_OAUTH_SUFFIX + path), at(_OIDC_SUFFIX + path), at(path + _OIDC_SUFFIX)]


def resource_metadata_urls(server_url: str) -> list[str]:
    """RFC 9728 well-known URLs for an MCP server: path-aware first, then the origin's."""
    parts = urlsplit(check_endpoint(server_url, "server URL"))
    path = parts.path.rstrip("/")
    root = urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_SUFFIX, "", ""))
    if not path:
        return [root]
    return [urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_SUFFIX + path, "", "")), root]


#: RFC 3986 characters minus ``%`` (no percent-encoding: two parsers may decode it differently).
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]+")


def check_resource(resource: str, server_url: str) -> str:
    """RFC 9728 §7.3 / RFC 8707: the PRM's ``resource`` must name this server (same origin, and the
    server URL's path equals it or lies below it). Returns ``resource`` unchanged: it is sent exactly as
    published (no trailing ``/`` added or removed)."""
    # The string is passed on verbatim as the RFC 8707 resource (and often the audience), and other
    # parsers read it too: refuse anything on which URL parsers disagree (userinfo, backslashes,
    # whitespace/controls, percent-encoding, dot segments) rather than compare one parser's reading.
    if not isinstance(resource, str) or not _PLAIN_URL.fullmatch(resource) or "@" in resource:
        raise ResourceMetadataError(
            "resource metadata names a resource that is not a plain URL", member="resource"
        )
    try:
        want = urlsplit(server_url)
        got = urlsplit(resource)
    except ValueError:
        raise ResourceMetadataError(
            "resource metadata names an invalid resource", member="resource"
        ) from None
    if any(segment in (".", "..") for segment in got.path.split("/")):
        raise ResourceMetadataError(
            "resource metadata names a resource with dot segments", member="resource"
        )
    same_origin = (got.scheme, got.hostname, got.port) == (want.scheme, want.hostname, want.port)
    base = got.path.rstrip("/")
    path = want.path.rstrip("/")
    within = path == base or path.startswith(base + "/")
    if not same_origin or not within or got.query or got.fragment:
        raise ResourceMetadataError(
            "resource metadata names a resource that is not this MCP server", member="resource"
        )
    return resource


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise AuthorizationServerMetadataError(
            f"metadata member {name!r} is not a list of strings", member=name
        )
    return tuple(value)


def _endpoint(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        return check_endpoint(value, name) if isinstance(value, str) else _bad(name)
    except ConfigurationError:
        return _bad(name)


def _bad(name: str) -> str:
    raise AuthorizationServerMetadataError(f"metadata member {name!r} is not an https URL", member=name)


def parse_authorization_server_metadata(body: bytes, *, expected_issuer: str) -> AuthorizationServerMetadata:
    """Parse and validate an RFC 8414 document fetched for ``expected_issuer`` (identical ``issuer``)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise AuthorizationServerMetadataError("authorization server metadata is not JSON") from None
    if not isinstance(data, dict):
        raise AuthorizationServerMetadataError("authorization server metadata is not a JSON object")
    issuer = data.get("issuer")
    if not isinstance(issuer, str) or issuer != expected_issuer:
        # RFC 8414 §3.3: identical, character for character (no trailing-slash or case normalisation).
        raise AuthorizationServerMetadataError(
            "authorization server metadata names another issuer than the one it was fetched for",
            member="issuer",
        )
    for flag in ("authorization_response_iss_parameter_supported", "client_id_metadata_document_supported"):
        if flag in data and not isinstance(data[flag], bool):
            raise AuthorizationServerMetadataError(f"metadata member {flag!r} is not a boolean", member=flag)
    return AuthorizationServerMetadata(
        issuer=issuer,
        token_endpoint=_endpoint(data, "token_endpoint"),
        authorization_endpoint=_endpoint(data, "authorization_endpoint"),
        registration_endpoint=_endpoint(data, "registration_endpoint"),
        scopes_supported=_strings(data, "scopes_supported"),
        grant_types_supported=_strings(data, "grant_types_supported"),
        code_challenge_methods_supported=_strings(data, "code_challenge_methods_supported"),
        token_endpoint_auth_methods_supported=_strings(data, "token_endpoint_auth_methods_supported"),
        authorization_response_iss_parameter_supported=bool(
            data.get("authorization_response_iss_parameter_supported", False)
        ),
        client_id_metadata_document_supported=bool(data.get("client_id_metadata_document_supported", False)),
        raw=data,
    )


async def _get(client: httpx.AsyncClient, url: str, attempt_timeout: float) -> tuple[int, bytes]:
    if client.auth is not None or "authorization" in client.headers:
        raise ConfigurationError("the metadata client must not carry authentication")
    try:
        async with asyncio.timeout(attempt_timeout):
            async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    return response.status_code, b""
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_METADATA_BYTES:
                        raise AuthorizationServerMetadataError("authorization server metadata is too large")
                    chunks.append(chunk)
                return 200, b"".join(chunks)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise AuthorizationServerMetadataError(
            f"authorization server metadata could not be fetched ({type(exc).__name__})",
            cause=type(exc).__name__,
            retryable=True,
        ) from None


async def fetch_authorization_server_metadata(
    issuer: str,
    *,
    http_client: httpx.AsyncClient | None = None,
    attempt_timeout: float = DEFAULT_TIMEOUT,
) -> AuthorizationServerMetadata:
    """Try :func:`metadata_urls` in order (404/other non-200 -> the next); the first 200 must parse."""
    urls = metadata_urls(issuer)
    client = check_idp_client(http_client) if http_client is not None else default_http_client()
    try:
        statuses: list[int] = []
        for url in urls:
            status, body = await _get(client, url, attempt_timeout)
            if status == 200:
                return parse_authorization_server_metadata(body, expected_issuer=issuer)
            statuses.append(status)
    finally:
        if http_client is None:
            await client.aclose()
    raise AuthorizationServerMetadataError(
        f"no authorization server metadata found for the issuer (HTTP {statuses})", statuses=statuses
    )


async def discover(
    server_url: str,
    *,
    resource_metadata_url: str | None = None,
    http_client: httpx.AsyncClient | None = None,
    attempt_timeout: float = DEFAULT_TIMEOUT,
) -> Discovered:
    """RFC 9728 then RFC 8414 for ``server_url``: its protected-resource metadata (from
    ``resource_metadata_url``, e.g. a 401's ``WWW-Authenticate``, else the well-known URLs), validated
    against the server URL, and the metadata of the first authorization server it lists."""
    client = check_idp_client(http_client) if http_client is not None else default_http_client()
    try:
        candidates = [resource_metadata_url] if resource_metadata_url else resource_metadata_urls(server_url)
        prm: ResourceMetadata | None = None
        last: ResourceMetadataError | None = None
        for url in candidates:
            try:
                prm = await fetch_resource_metadata(url, http_client=client, attempt_timeout=attempt_timeout)
                break
            except ResourceMetadataError as exc:
                if exc.details.get("status") != 404:
                    raise
                last = exc
        if prm is None:
            raise last or ResourceMetadataError("no protected resource metadata found")
        check_resource(prm.resource, server_url)
        if not prm.authorization_servers:
            raise ResourceMetadataError(
                "resource metadata lists no authorization server", member="authorization_servers"
            )
        server = await fetch_authorization_server_metadata(
            prm.authorization_servers[0], http_client=client, attempt_timeout=attempt_timeout
        )
        return Discovered(resource=prm, server=server)
    finally:
        if http_client is None:
            await client.aclose()
