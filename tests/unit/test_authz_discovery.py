"""RFC 8414 / RFC 9728 discovery, pure part: well-known URLs, strict metadata parsing, resource checks."""

from __future__ import annotations

import json

import pytest

from mcpclient_auth.authz import (
    check_resource,
    metadata_urls,
    parse_authorization_server_metadata,
    resource_metadata_urls,
)
from mcpclient_auth.errors import AuthorizationServerMetadataError, ConfigurationError, ResourceMetadataError


def doc(**members: object) -> bytes:
    return json.dumps({"issuer": "https://as.example/tenant1", **members}).encode()


def test_metadata_urls_follow_the_mcp_order() -> None:
    assert metadata_urls("https://as.example/tenant1") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant1",
        "https://as.example/.well-known/openid-configuration/tenant1",
        "https://as.example/tenant1/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration",
    ]


def test_metadata_urls_refuse_what_is_no_issuer() -> None:
    for bad in ("http://as.example", "https://as.example/?x=1", "ftp://as.example"):
        with pytest.raises(ConfigurationError):
            metadata_urls(bad)


def test_resource_metadata_urls_path_aware_first() -> None:
    assert resource_metadata_urls("https://mcp.example/v1/mcp") == [
        "https://mcp.example/.well-known/oauth-protected-resource/v1/mcp",
        "https://mcp.example/.well-known/oauth-protected-resource",
    ]
    assert resource_metadata_urls("http://127.0.0.1:9") == [
        "http://127.0.0.1:9/.well-known/oauth-protected-resource"
    ]


def test_metadata_parses_what_a_client_needs() -> None:
    meta = parse_authorization_server_metadata(
        doc(
            token_endpoint="https://as.example/tenant1/token",
            authorization_endpoint="https://as.example/tenant1/authorize",
            code_challenge_methods_supported=["S256"],
            authorization_response_iss_parameter_supported=True,
            client_id_metadata_document_supported=True,
            scopes_supported=["a", "offline_access"],
        ),
        expected_issuer="https://as.example/tenant1",
    )
    assert meta.token_endpoint == "https://as.example/tenant1/token"
    assert meta.code_challenge_methods_supported == ("S256",)
    assert meta.authorization_response_iss_parameter_supported is True
    assert meta.client_id_metadata_document_supported is True
    assert meta.registration_endpoint is None


@pytest.mark.parametrize(
    "expected",
    [
        "https://as.example/tenant1/",  # a trailing slash is another issuer (RFC 8414 §3.3: identical)
        "https://AS.example/tenant1",  # no case normalisation either
        "https://as.example/tenant2",
    ],
)
def test_metadata_issuer_must_be_identical(expected: str) -> None:
    with pytest.raises(AuthorizationServerMetadataError) as caught:
        parse_authorization_server_metadata(doc(), expected_issuer=expected)
    assert caught.value.details["member"] == "issuer"


@pytest.mark.parametrize(
    "members",
    [
        {"token_endpoint": "http://as.example/token"},  # plain http off loopback
        {"token_endpoint": 7},
        {"scopes_supported": "a b"},
        {"authorization_response_iss_parameter_supported": "true"},
    ],
)
def test_metadata_members_of_the_wrong_shape_are_refused(members: dict[str, object]) -> None:
    with pytest.raises(AuthorizationServerMetadataError):
        parse_authorization_server_metadata(doc(**members), expected_issuer="https://as.example/tenant1")


def test_metadata_that_is_no_json_object_is_refused() -> None:
    for body in (b"[]", b"not json", b'{"issuer": null}'):
        with pytest.raises(AuthorizationServerMetadataError):
            parse_authorization_server_metadata(body, expected_issuer="https://as.example")


def test_check_resource_returns_the_published_value_unchanged() -> None:
    # RFC 8707: the resource indicator goes out exactly as the PRM publishes it (no "/" added or cut).
    assert check_resource("https://mcp.example/mcp", "https://mcp.example/mcp") == "https://mcp.example/mcp"
    assert check_resource("https://mcp.example/", "https://mcp.example/mcp") == "https://mcp.example/"
    assert check_resource("https://mcp.example", "https://mcp.example/mcp") == "https://mcp.example"


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example/mcp",
        "https://mcp.example:8443/mcp",
        "http://mcp.example/mcp",
        "https://mcp.example/other",
        "https://mcp.example/mcp-admin",  # a prefix of the string, not of the path
        "https://mcp.example/mcp?x=1",
        # Strings URL parsers read differently (a WHATWG parser reads the first host as evil.example):
        "https://evil.example\\@mcp.example/mcp",
        "https://other@mcp.example/mcp",
        "https://mcp.example/mcp\t",
        "https://mcp.example/m\ncp",
        "https://mcp.example/%6dcp",
        "https://mcp.example/mcp/../mcp",
        "https://mcp.example/./mcp",
    ],
)
def test_check_resource_refuses_another_server(resource: str) -> None:
    with pytest.raises(ResourceMetadataError):
        check_resource(resource, "https://mcp.example/mcp")
