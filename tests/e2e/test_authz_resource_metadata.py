"""RFC 9728 protected-resource metadata fetch against a real server on 127.0.0.1 (issue [authz])."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mcpclient_auth.authz import fetch_resource_metadata, well_known_metadata_url
from mcpclient_auth.errors import ConfigurationError, ResourceMetadataError
from tests.support.idp import IdP
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.e2e

RESOURCE = "https://mcp.example.com/mcp"


@pytest.fixture(scope="module")
def server() -> Iterator[IdP]:
    idp = IdP()
    with serve(idp.app) as base_url:
        idp.base_url = base_url
        yield idp


@pytest.fixture
def idp(server: IdP) -> IdP:
    server.reset()
    return server


def test_well_known_url() -> None:
    assert well_known_metadata_url(RESOURCE) == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert well_known_metadata_url("https://mcp.example.com/") == (
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    )


async def test_fetch_reads_the_document_anonymously(idp: IdP) -> None:
    idp.metadata = {
        "resource": RESOURCE,
        "authorization_servers": ["https://idp.example.com"],
        "scopes_supported": ["mcp.read"],
        "bearer_methods_supported": ["header"],
    }
    meta = await fetch_resource_metadata(
        f"{idp.base_url}/.well-known/oauth-protected-resource/mcp", expected_resource=RESOURCE
    )
    assert meta.resource == RESOURCE
    assert meta.authorization_servers == ("https://idp.example.com",)
    assert meta.scopes_supported == ("mcp.read",)
    (headers,) = idp.metadata_requests
    assert "authorization" not in headers
    assert not any(name.startswith("signature") or name == "act-mandate" for name in headers)


async def test_a_different_resource_is_refused(idp: IdP) -> None:
    idp.metadata = {"resource": "https://evil.example.com/mcp", "authorization_servers": ["https://evil.example"]}
    with pytest.raises(ResourceMetadataError):
        await fetch_resource_metadata(f"{idp.base_url}/.well-known/oauth-protected-resource/mcp", expected_resource=RESOURCE)


@pytest.mark.parametrize(
    "document",
    [
        {"authorization_servers": ["https://idp.example.com"]},
        {"resource": RESOURCE, "authorization_servers": "https://idp.example.com"},
        {"resource": RESOURCE, "authorization_servers": ["http://idp.example.com"]},
    ],
)
async def test_bad_documents(idp: IdP, document: dict[str, object]) -> None:
    idp.metadata = document
    with pytest.raises(ResourceMetadataError):
        await fetch_resource_metadata(f"{idp.base_url}/.well-known/oauth-protected-resource/mcp")


async def test_not_found_and_unreachable(idp: IdP) -> None:
    with pytest.raises(ResourceMetadataError) as caught:
        await fetch_resource_metadata(f"{idp.base_url}/.well-known/oauth-protected-resource/mcp")
    assert caught.value.details["status"] == 404
    with pytest.raises(ResourceMetadataError) as down:
        await fetch_resource_metadata(f"http://127.0.0.1:{free_port()}/.well-known/oauth-protected-resource")
    assert down.value.retryable is True


async def test_a_client_carrying_credentials_is_refused(idp: IdP) -> None:
    async with httpx.AsyncClient(headers={"Authorization": "Bearer SECRET"}) as client:
        with pytest.raises(ConfigurationError):
            await fetch_resource_metadata(f"{idp.base_url}/.well-known/oauth-protected-resource", http_client=client)
    assert idp.metadata_requests == []
