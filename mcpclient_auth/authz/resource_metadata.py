"""RFC 9728 OAuth 2.0 Protected Resource Metadata: which authorization server guards an MCP server.

    challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
    url = challenge.resource_metadata or well_known_metadata_url("https://mcp.example.com/mcp")
    meta = await fetch_resource_metadata(url, expected_resource="https://mcp.example.com/mcp")
    meta.authorization_servers     # ('https://idp.example.com',)

The metadata request is anonymous: it is sent without any of our credentials (no bearer token, no
signature, no client authentication), never follows redirects, and must come back with a ``resource``
equal to the one we asked about (RFC 9728 §3.3 and §7.3: otherwise an attacker's metadata could point
the client at an authorization server of its choosing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import ConfigurationError, ResourceMetadataError
from ._token_request import DEFAULT_TIMEOUT, check_endpoint, check_idp_client, default_http_client

__all__ = [
    "MAX_METADATA_BYTES",
    "WELL_KNOWN_SUFFIX",
    "ResourceMetadata",
    "fetch_resource_metadata",
    "well_known_metadata_url",
]

WELL_KNOWN_SUFFIX = "/.well-known/oauth-protected-resource"
MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """The members a client needs; ``raw`` keeps the whole (parsed) document."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] = ()
    bearer_methods_supported: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def well_known_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: insert the well-known suffix between the host and the path of ``resource``.

        well_known_metadata_url("https://mcp.example.com/mcp")
        # 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp'
    """
    parts = urlsplit(check_endpoint(resource, "resource"))
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_SUFFIX + path, parts.query, ""))


async def fetch_resource_metadata(
    url: str,
    *,
    expected_resource: str | None = None,
    http_client: httpx.AsyncClient | None = None,
    attempt_timeout: float = DEFAULT_TIMEOUT,
) -> ResourceMetadata:
    """GET ``url`` anonymously and validate the document (RFC 9728 §2, §3.2, §3.3).

    ``expected_resource`` (the MCP server URL the client used) must equal the document's
    ``resource``; pass it whenever the URL came from a ``WWW-Authenticate`` header.
    """
    check_endpoint(url, "resource metadata URL")
    client = check_idp_client(http_client) if http_client is not None else default_http_client()
    try:
        body = await _get(client, url, attempt_timeout)
    finally:
        if http_client is None:
            await client.aclose()
    return _parse(body, expected_resource)


async def _get(client: httpx.AsyncClient, url: str, attempt_timeout: float) -> bytes:
    # A fresh request with only Accept: an explicit auth=None would still inherit the client's auth,
    # so refuse clients that carry one instead of risking our credentials on someone else's URL.
    if client.auth is not None or "authorization" in client.headers:
        raise ConfigurationError("the metadata client must not carry authentication")
    try:
        async with asyncio.timeout(attempt_timeout):
            async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise ResourceMetadataError(
                        f"resource metadata request answered HTTP {response.status_code}",
                        status=response.status_code,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_METADATA_BYTES:
                        raise ResourceMetadataError("resource metadata document is too large")
                    chunks.append(chunk)
                return b"".join(chunks)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise ResourceMetadataError(
            f"resource metadata could not be fetched ({type(exc).__name__})",
            cause=type(exc).__name__,
            retryable=True,
        ) from None


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ResourceMetadataError(
            f"resource metadata member {name!r} is not a list of strings", member=name
        )
    return tuple(value)


def _parse(body: bytes, expected_resource: str | None) -> ResourceMetadata:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ResourceMetadataError("resource metadata is not JSON") from None
    if not isinstance(data, dict):
        raise ResourceMetadataError("resource metadata is not a JSON object")
    resource = data.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ResourceMetadataError("resource metadata lacks 'resource'", member="resource")
    if expected_resource is not None and resource != expected_resource:
        raise ResourceMetadataError("resource metadata names a different resource than the one requested")
    servers = _strings(data, "authorization_servers")
    for server in servers:
        try:
            check_endpoint(server, "authorization server")
        except ConfigurationError:
            raise ResourceMetadataError(
                "resource metadata lists an authorization server that is not an https URL",
                member="authorization_servers",
            ) from None
    return ResourceMetadata(
        resource=resource,
        authorization_servers=servers,
        scopes_supported=_strings(data, "scopes_supported"),
        bearer_methods_supported=_strings(data, "bearer_methods_supported"),
        raw=data,
    )
