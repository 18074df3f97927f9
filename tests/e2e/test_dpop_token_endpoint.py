"""DPoP (RFC 9449) at real token endpoints on 127.0.0.1: every source sends a proof (checked by the test
AS with PyJWT + joserfc), gets a DPoP-bound token, retries once on ``use_dpop_nonce``, refuses a bearer
downgrade, and caches per key (issue #15)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

from mcpclient_auth import DPoP
from mcpclient_auth.authz import (
    AuthorizationCode,
    ClientCredentials,
    EntraOnBehalfOf,
    IdJag,
    JwtBearer,
    TokenCache,
    TokenExchange,
)
from mcpclient_auth.errors import DPoPNotBound, TokenExchangeRejected
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from tests.support.idp import IdP, Reply
from tests.support.oauth_server import AuthorizationServer
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

SECRET = "SECRET-SENTINEL-dpop-as"
ALICE_TOKEN = "SUBJ-SENTINEL-alice-dpop"
PLATFORM_JWT = "PLATFORM-SENTINEL-dpop"
SENTINELS = (SECRET, ALICE_TOKEN, PLATFORM_JWT)
ALICE = Principal(id="alice", subject_token=ALICE_TOKEN)
CLIENT = "agent-app"
CLIENT_KEY = Identity.generate("ES256", name="client-key")
AGENT = Identity.generate("ES256", name="agent-1")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[IdP, IdP]]:
    enterprise = IdP(clients={"agent-at-idp": SECRET}, subjects={ALICE_TOKEN: "alice"})
    mcp_as = IdP(
        clients={CLIENT: SECRET},
        client_keys={"pkj-agent": CLIENT_KEY.public},
        subjects={ALICE_TOKEN: "alice", PLATFORM_JWT: "workload-7"},
        public_clients={"wif-agent"},
    )
    with serve(enterprise.app) as idp_base, serve(mcp_as.app) as as_base:
        enterprise.base_url, mcp_as.base_url = idp_base, as_base
        yield enterprise, mcp_as


@pytest.fixture
def idp(servers: tuple[IdP, IdP]) -> IdP:
    servers[1].reset()
    return servers[1]


@pytest.fixture
def enterprise(servers: tuple[IdP, IdP]) -> IdP:
    servers[0].reset()
    return servers[0]


def issued(token: str) -> dict[str, Any]:
    return IdP.decode(token)


def quiet(text: str) -> None:
    for sentinel in SENTINELS:
        assert sentinel not in text


def sources(idp: IdP, enterprise: IdP, dpop: DPoP) -> dict[str, Any]:
    common: dict[str, Any] = {"retry_backoff": 0.01, "dpop": dpop}
    return {
        "exchange": TokenExchange(idp.token_url, CLIENT, SECRET, audience="api://mcp", **common),
        "client_credentials": ClientCredentials(idp.token_url, CLIENT, SECRET, scopes=["mcp.read"], **common),
        "entra_obo": EntraOnBehalfOf(
            CLIENT, SECRET, token_endpoint=idp.token_url, scopes=["api://mcp/.default"], **common
        ),
        "jwt_bearer": JwtBearer(idp.token_url, "wif-agent", assertion=lambda p: PLATFORM_JWT, **common),
        "private_key_jwt": ClientCredentials(
            idp.token_url, "pkj-agent", client_key=CLIENT_KEY, assertion_audience="token_endpoint", **common
        ),
        "id_jag": IdJag(
            idp_token_endpoint=enterprise.token_url,
            idp_client_id="agent-at-idp",
            idp_client_secret=SECRET,
            token_endpoint=idp.token_url,
            issuer=idp.issuer,
            client_id=CLIENT,
            client_secret=SECRET,
            resource="https://mcp.example/mcp",
            **common,
        ),
    }


SOURCES = ["exchange", "client_credentials", "entra_obo", "jwt_bearer", "private_key_jwt", "id_jag"]


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_every_grant_source_sends_a_proof_and_gets_a_bound_token(
    idp: IdP, enterprise: IdP, name: str, alg: str
) -> None:
    dpop = DPoP(Identity.generate(alg))
    source = sources(idp, enterprise, dpop)[name]
    async with source:
        token = await source.get_token(ALICE)
        assert await source.get_token(ALICE) is token  # cached under the key's thumbprint
    assert token.token_type == "DPoP" and token.authorization_header().startswith("DPoP ")
    assert issued(token.token)["cnf"] == {"jkt": dpop.thumbprint}  # bound by the AS to our key
    (request,) = idp.requests  # one request at the MCP AS (the ID-JAG leg 1 goes to the enterprise IdP)
    assert request.dpop is not None and request.dpop_jkt == dpop.thumbprint
    assert request.dpop["htm"] == "POST" and request.dpop["htu"] == idp.token_url
    assert "ath" not in request.dpop and "nonce" not in request.dpop
    if name == "id_jag":
        (leg1,) = enterprise.requests
        assert "dpop" not in leg1.headers  # the ID-JAG is an assertion, not a DPoP-bound access token


@pytest.mark.parametrize("name", SOURCES)
async def test_use_dpop_nonce_is_retried_once_with_the_nonce_and_remembered(
    idp: IdP, enterprise: IdP, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    idp.dpop_nonce = "as-nonce-" + secrets.token_hex(4)
    dpop = DPoP()
    source = sources(idp, enterprise, dpop)[name]
    caplog.set_level(logging.DEBUG, logger="mcpclient_auth")
    async with source:
        token = await source.get_token(ALICE)
        first, second = idp.requests
        assert first.dpop is None and second.dpop is not None  # refused for the nonce, then accepted
        assert second.dpop["nonce"] == idp.dpop_nonce
        assert "dpop" in first.headers and first.headers["dpop"] != second.headers["dpop"]  # fresh proof
        source.invalidate(ALICE, token=token)
        await source.get_token(ALICE)
    assert len(idp.requests) == 3  # the nonce was remembered: no second challenge
    assert idp.requests[2].dpop is not None and idp.requests[2].dpop["nonce"] == idp.dpop_nonce
    assert dpop.nonce_for("rs", idp.token_url) is None  # an AS nonce is never an RS nonce
    quiet(caplog.text)
    assert token.token not in caplog.text


async def test_a_second_use_dpop_nonce_is_a_typed_refusal(idp: IdP, enterprise: IdP) -> None:
    challenge = Reply.raw(b'{"error":"use_dpop_nonce"}', status=400, headers={"DPoP-Nonce": "n-1"})
    again = Reply.raw(b'{"error":"use_dpop_nonce"}', status=400, headers={"DPoP-Nonce": "n-2"})
    idp.queue(challenge, again)
    source = sources(idp, enterprise, DPoP())["exchange"]
    async with source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(ALICE)
    assert caught.value.details["error"] == "use_dpop_nonce"
    assert idp.count == 2  # one resend, no loop


async def test_a_nonce_challenge_without_a_nonce_is_not_retried(idp: IdP, enterprise: IdP) -> None:
    idp.queue(Reply.raw(b'{"error":"use_dpop_nonce"}', status=400))
    source = sources(idp, enterprise, DPoP())["exchange"]
    async with source:
        with pytest.raises(TokenExchangeRejected):
            await source.get_token(ALICE)
    assert idp.count == 1


@pytest.mark.parametrize("name", SOURCES)
async def test_a_bearer_answer_to_a_proof_is_refused_and_not_cached(idp: IdP, enterprise: IdP, name: str) -> None:
    idp.dpop_bearer_anyway = True  # the AS ignores the proof: a downgrade
    source = sources(idp, enterprise, DPoP())[name]
    async with source:
        with pytest.raises(DPoPNotBound) as caught:
            await source.get_token(ALICE)
        quiet(f"{caught.value} {caught.value!r} {caught.value.details}")
        idp.dpop_bearer_anyway = False
        token = await source.get_token(ALICE)  # nothing was cached: the next call asks again
    assert token.token_type == "DPoP"
    assert caught.value.code == "dpop_not_bound"


async def test_bearer_and_dpop_callers_and_two_keys_never_share_a_token(idp: IdP, enterprise: IdP) -> None:
    cache = TokenCache()
    a, b = DPoP(), DPoP()
    bearer = TokenExchange(idp.token_url, CLIENT, SECRET, audience="api://mcp", cache=cache)
    with_a = TokenExchange(idp.token_url, CLIENT, SECRET, audience="api://mcp", cache=cache, dpop=a)
    with_b = TokenExchange(idp.token_url, CLIENT, SECRET, audience="api://mcp", cache=cache, dpop=b)
    async with bearer, with_a, with_b:
        plain = await bearer.get_token(ALICE)
        bound_a = await with_a.get_token(ALICE)
        bound_b = await with_b.get_token(ALICE)
        assert await bearer.get_token(ALICE) is plain and await with_a.get_token(ALICE) is bound_a
    assert plain.token_type == "Bearer" and "cnf" not in issued(plain.token)
    assert issued(bound_a.token)["cnf"]["jkt"] == a.thumbprint
    assert issued(bound_b.token)["cnf"]["jkt"] == b.thumbprint
    assert len({plain.token, bound_a.token, bound_b.token}) == 3 and idp.count == 3
    assert len(cache) == 3


def test_a_source_rejects_a_dpop_option_that_is_not_a_dpop_key(idp: IdP) -> None:
    from mcpclient_auth.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        TokenExchange(idp.token_url, CLIENT, SECRET, dpop=AGENT)  # type: ignore[arg-type]


# --- AuthorizationCode (code and refresh) ------------------------------------------------------------


@pytest.fixture
def oauth() -> Iterator[tuple[AuthorizationServer, str]]:
    server = AuthorizationServer(access_token="oauth-at-" + secrets.token_hex(8), issue_refresh=True)
    with serve(Starlette(routes=server.routes())) as base:
        yield server, base


async def test_authorization_code_and_refresh_carry_proofs_with_one_key(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    server.dpop_nonce = "code-nonce"
    server.dpop_algs = ["ES256"]
    dpop = DPoP(AGENT)  # the agent's own key
    principal = Principal(id="alice")
    async with AuthorizationCode(
        server_url=f"{base}/mcp", interaction=server.browser.redirect, redirect_uri="http://127.0.0.1:9/cb", dpop=dpop
    ) as flow:
        token = await flow.get_token(principal)
        assert token.token_type == "DPoP"
        flow.invalidate(principal, token=token)
        refreshed = await flow.get_token(principal)  # the refresh grant, with a proof of the same key
    assert refreshed.token_type == "DPoP"
    assert [form["grant_type"] for form in server.token_forms] == [
        "authorization_code",
        "authorization_code",  # the nonce challenge, then the retry
        "refresh_token",
    ]
    assert len(server.token_proofs) == 2  # the challenged proof is not recorded as accepted
    assert all(p["nonce"] == "code-nonce" and p["htu"] == f"{base}/token" for p in server.token_proofs)
    # The test AS binds the refresh token to the proof key: a refresh without the proof would be
    # invalid_grant and send the user through the authorization again.
    assert len(server.browser.visited) == 1
    # RFC 9449 §10: the authorization request named the key, so the code is bound to it too.
    (query,) = server.authorize_queries
    assert query["dpop_jkt"] == dpop.thumbprint


async def test_an_as_that_does_not_take_our_proof_algorithm_is_refused_before_the_user_is_asked(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    from mcpclient_auth.errors import AuthorizationServerMetadataError

    server, base = oauth
    server.dpop_algs = ["EdDSA"]
    async with AuthorizationCode(
        server_url=f"{base}/mcp", interaction=server.browser.redirect, redirect_uri="http://127.0.0.1:9/cb",
        dpop=DPoP(),  # ES256
    ) as flow:
        with pytest.raises(AuthorizationServerMetadataError) as caught:
            await flow.get_token(Principal(id="alice"))
    assert caught.value.details["member"] == "dpop_signing_alg_values_supported"
    assert server.browser.visited == [] and server.token_forms == []


def test_no_secret_in_reprs(idp: IdP, enterprise: IdP) -> None:
    dpop = DPoP(AGENT)
    for source in sources(idp, enterprise, dpop).values():
        text = repr(source)
        quiet(text)
        assert AGENT.private_jwk()["d"] not in text


# --- the shared (Redis) token store ------------------------------------------------------------------


async def test_the_shared_store_keeps_dpop_tokens_bound_and_apart(idp: IdP, redis_server: Any) -> None:
    from mcpclient_auth.authz import RedisTokenStore
    from mcpclient_auth.authz.redis_store import generate_encryption_key

    key = generate_encryption_key()
    dpop = DPoP()

    def source(worker_dpop: DPoP | None) -> TokenExchange:
        store = RedisTokenStore(redis_server.url, encryption_key=key)
        return TokenExchange(
            idp.token_url, CLIENT, SECRET, audience="api://mcp", cache=TokenCache(store=store), dpop=worker_dpop
        )

    first, second, bearer, other_key = source(dpop), source(dpop), source(None), source(DPoP())
    async with first, second, bearer, other_key:
        bound = await first.get_token(ALICE)
        again = await second.get_token(ALICE)  # another worker, same key: served from Redis
        assert idp.count == 1 and again.token == bound.token and again.token_type == "DPoP"
        plain = await bearer.get_token(ALICE)  # a bearer caller never gets the bound token
        foreign = await other_key.get_token(ALICE)  # nor does a source proving with another key
        for held in (first, second, bearer, other_key):
            await held.cache.store.aclose()
    assert idp.count == 3 and plain.token_type == "Bearer"
    assert len({bound.token, plain.token, foreign.token}) == 3
    assert issued(foreign.token)["cnf"]["jkt"] != dpop.thumbprint
