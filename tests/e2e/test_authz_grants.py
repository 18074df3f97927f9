"""The 2026 grants against real token endpoints on 127.0.0.1: RFC 7523 ``JwtBearer`` (workload identity
federation), ``IdJag`` (both legs: RFC 8693 at an enterprise IdP, jwt-bearer at the MCP authorization
server), ``private_key_jwt`` with ``aud`` = the AS issuer, and RFC 8414 discovery (issue #15)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mcpclient_auth.authz import (
    ID_JAG_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    ClientCredentials,
    IdJag,
    JwtBearer,
    fetch_authorization_server_metadata,
)
from mcpclient_auth.errors import (
    AssertionUnavailable,
    AuthorizationServerMetadataError,
    MissingSubjectToken,
    TokenExchangeRejected,
)
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from tests.support.idp import JWT_BEARER, TOKEN_EXCHANGE, IdP
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

ALICE_ID_TOKEN = "IDTOKEN-SENTINEL-alice"
BOB_ID_TOKEN = "IDTOKEN-SENTINEL-bob"
PLATFORM_JWT = "PLATFORM-SENTINEL-workload"
SECRET = "SECRET-SENTINEL-grants"
SENTINELS = (ALICE_ID_TOKEN, BOB_ID_TOKEN, PLATFORM_JWT, SECRET)
KEY = Identity.generate(name="agent-key")
RESOURCE = "https://mcp.example/mcp"
ALICE = Principal(id="alice", subject_token=ALICE_ID_TOKEN, subject_token_type=ID_TOKEN_TYPE)
BOB = Principal(id="bob", subject_token=BOB_ID_TOKEN, subject_token_type=ID_TOKEN_TYPE)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[IdP, IdP]]:
    enterprise = IdP(
        clients={"agent-at-idp": SECRET}, subjects={ALICE_ID_TOKEN: "alice", BOB_ID_TOKEN: "bob"}
    )
    mcp_as = IdP(
        clients={"agent-at-as": SECRET},
        client_keys={"agent-pkj": KEY.public},
        public_clients={"wif-agent"},
        subjects={PLATFORM_JWT: "workload-7"},
    )
    with serve(enterprise.app) as idp_base, serve(mcp_as.app) as as_base:
        enterprise.base_url, mcp_as.base_url = idp_base, as_base
        yield enterprise, mcp_as


@pytest.fixture
def idp(servers: tuple[IdP, IdP]) -> IdP:
    servers[0].reset()
    return servers[0]


@pytest.fixture
def mcp_as(servers: tuple[IdP, IdP]) -> IdP:
    servers[1].reset()
    return servers[1]


def quiet(error: BaseException) -> None:
    text = f"{error} {error!r} {getattr(error, 'details', '')}"
    for sentinel in SENTINELS:
        assert sentinel not in text


# --- JwtBearer ------------------------------------------------------------------------------------------


async def test_jwt_bearer_wif_sends_rfc7523_form_once_for_concurrent_callers(mcp_as: IdP) -> None:
    calls: list[str] = []

    async def platform_token(principal: Principal) -> str:
        calls.append(principal.id)
        await asyncio.sleep(0.05)  # concurrent callers arrive while the token is being read
        return PLATFORM_JWT

    workload = Principal(id="workload-7")
    async with JwtBearer(
        mcp_as.token_url,
        client_id="wif-agent",
        assertion=platform_token,
        resource=RESOURCE,
        scopes=["mcp.read"],
    ) as source:
        tokens = await asyncio.gather(*(source.get_token(workload) for _ in range(5)))
        assert len({t.token for t in tokens}) == 1 and calls == ["workload-7"]  # single-flight
        await source.get_token(workload)
        assert mcp_as.count == 1  # cached
        source.invalidate(workload, token=tokens[0])
        await source.get_token(workload)
    assert mcp_as.count == 2 and len(calls) == 2  # the assertion is read fresh per token request
    first = mcp_as.requests[0]
    assert first.fields == {
        "grant_type": JWT_BEARER,
        "assertion": PLATFORM_JWT,
        "resource": RESOURCE,
        "scope": "mcp.read",
        "client_id": "wif-agent",
    }
    claims = IdP.decode(tokens[0].token)
    assert (
        claims["sub"] == "workload-7" and claims["resource"] == [RESOURCE] and claims["grant"] == JWT_BEARER
    )


async def test_jwt_bearer_failures_are_typed_and_never_show_the_assertion(mcp_as: IdP) -> None:
    def broken(principal: Principal) -> str:
        raise RuntimeError(f"could not read {PLATFORM_JWT}")

    source = JwtBearer(mcp_as.token_url, client_id="wif-agent", assertion=broken)
    with pytest.raises(AssertionUnavailable) as caught:
        await source.get_token(Principal(id="w"))
    quiet(caught.value)
    assert mcp_as.count == 0  # nothing was sent without an assertion

    unknown = JwtBearer(
        mcp_as.token_url, client_id="wif-agent", assertion=lambda p: "UNKNOWN-" + PLATFORM_JWT
    )
    with pytest.raises(TokenExchangeRejected) as rejected:
        await unknown.get_token(Principal(id="w"))
    assert rejected.value.details["error"] == "invalid_grant" and rejected.value.retryable is False
    quiet(rejected.value)
    assert mcp_as.count == 1  # a refusal is not retried
    await source.aclose()
    await unknown.aclose()


async def test_jwt_bearer_without_a_callable_uses_the_principals_assertion(mcp_as: IdP) -> None:
    async with JwtBearer(mcp_as.token_url, client_id="wif-agent") as source:
        token = await source.get_token(Principal(id="w", subject_token=PLATFORM_JWT))
        assert IdP.decode(token.token)["sub"] == "workload-7"
        with pytest.raises(MissingSubjectToken):
            await source.get_token(Principal(id="nobody"))


# --- IdJag ----------------------------------------------------------------------------------------------


def id_jag(idp: IdP, mcp_as: IdP, **overrides: object) -> IdJag:
    options: dict[str, object] = {
        "idp_token_endpoint": idp.token_url,
        "idp_client_id": "agent-at-idp",
        "idp_client_secret": SECRET,
        "token_endpoint": mcp_as.token_url,
        "issuer": mcp_as.issuer,
        "client_id": "agent-at-as",
        "client_secret": SECRET,
        "resource": RESOURCE,
        "scopes": ["mcp.read"],
        "retry_backoff": 0.01,
    }
    options.update(overrides)
    return IdJag(**options)  # type: ignore[arg-type]


async def test_id_jag_runs_both_legs_and_caches_per_user_and_resource(idp: IdP, mcp_as: IdP) -> None:
    async with id_jag(idp, mcp_as) as source:
        token = await source.get_token(ALICE)
        assert await source.get_token(ALICE) is token
        (leg1,) = idp.requests
        (leg2,) = mcp_as.requests
        await source.get_token(BOB)  # another user: both legs again
        await source.get_token(ALICE, audience="https://mcp.example/other")  # another resource: again
    assert idp.count == 3 and mcp_as.count == 3

    assert leg1.auth_method == "client_secret_basic"
    assert leg1.fields == {
        "grant_type": TOKEN_EXCHANGE,
        "requested_token_type": ID_JAG_TOKEN_TYPE,
        "audience": mcp_as.issuer,  # the MCP authorization server's issuer
        "resource": RESOURCE,  # the MCP server
        "subject_token": ALICE_ID_TOKEN,
        "subject_token_type": ID_TOKEN_TYPE,
        "scope": "mcp.read",
    }
    jag = IdP.decode(leg2.field("assertion"))
    assert jag["issued"] == ID_JAG_TOKEN_TYPE and jag["aud"] == [mcp_as.issuer] and jag["sub"] == "alice"
    assert leg2.auth_method == "client_secret_basic"
    assert leg2.fields["grant_type"] == JWT_BEARER and leg2.fields["resource"] == RESOURCE
    claims = IdP.decode(token.token)
    assert claims["sub"] == "alice" and claims["client"] == "agent-at-as" and claims["grant"] == JWT_BEARER


async def test_id_jag_for_another_authorization_server_is_refused_there(idp: IdP, mcp_as: IdP) -> None:
    # The IdP issues the ID-JAG for the audience we name; an AS must refuse one made for someone else.
    async with id_jag(idp, mcp_as, issuer="http://127.0.0.1:1") as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(ALICE)
    assert caught.value.details["error"] == "invalid_grant"
    quiet(caught.value)


async def test_id_jag_stops_when_the_idp_refuses(idp: IdP, mcp_as: IdP) -> None:
    stranger = Principal(id="eve", subject_token="IDTOKEN-SENTINEL-unknown", subject_token_type=ID_TOKEN_TYPE)
    async with id_jag(idp, mcp_as) as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(stranger)
        with pytest.raises(MissingSubjectToken):
            await source.get_token(Principal(id="no-token"))
    quiet(caught.value)
    assert idp.count == 1 and mcp_as.count == 0  # leg two never ran


# --- private_key_jwt aud = issuer, and RFC 8414 discovery --------------------------------------------------


async def test_private_key_jwt_aud_is_the_issuer_and_the_old_aud_is_refused_by_such_a_server(
    mcp_as: IdP,
) -> None:
    mcp_as.assertion_audience = "issuer"  # what SEP-1046 / rfc7523bis servers check
    async with ClientCredentials(
        mcp_as.token_url, client_id="agent-pkj", client_key=KEY, issuer=mcp_as.issuer, resource=RESOURCE
    ) as source:
        token = await source.get_token()
    assert IdP.decode(token.token)["client"] == "agent-pkj"
    async with ClientCredentials(
        mcp_as.token_url, client_id="agent-pkj", client_key=KEY, assertion_audience="token_endpoint"
    ) as old:
        with pytest.raises(TokenExchangeRejected) as caught:
            await old.get_token()
    assert caught.value.details["error"] == "invalid_client"


async def test_rfc8414_discovery_against_a_real_server(mcp_as: IdP) -> None:
    meta = await fetch_authorization_server_metadata(mcp_as.issuer)
    assert meta.issuer == mcp_as.issuer and meta.token_endpoint == mcp_as.token_url
    assert JWT_BEARER in meta.grant_types_supported
    with pytest.raises(AuthorizationServerMetadataError) as caught:  # document names another issuer
        await fetch_authorization_server_metadata(mcp_as.issuer + "/")
    assert caught.value.details["member"] == "issuer"
    with pytest.raises(AuthorizationServerMetadataError) as missing:  # nothing at any of the three URLs
        await fetch_authorization_server_metadata(mcp_as.issuer + "/tenant9")
    assert missing.value.details["statuses"] == [404, 404, 404]
