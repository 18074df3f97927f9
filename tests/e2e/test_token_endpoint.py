"""Token sources against a real token endpoint on 127.0.0.1 (issue [authz], acceptance 1, 2, 3 and 7)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from mcpclient_auth._encoding import b64url_decode
from mcpclient_auth.authz import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    AccessToken,
    ClientCredentials,
    EntraOnBehalfOf,
    TokenCache,
    TokenExchange,
)
from mcpclient_auth.errors import (
    AuthorizationError,
    InvalidTokenResponse,
    MissingSubjectToken,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from tests.support.idp import (
    CLIENT_CREDENTIALS,
    JWT_BEARER,
    TOKEN_EXCHANGE,
    IdP,
    Reply,
)
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.e2e

# Sentinels: none of these may ever appear in an error message, a repr or a log line.
ALICE_TOKEN = "SUBJ-SENTINEL-alice-7f3a"
BOB_TOKEN = "SUBJ-SENTINEL-bob-91c2"
ACTOR_TOKEN = "ACTOR-SENTINEL-agent-55aa"
SECRET = "SECRET-SENTINEL:p+w%d/é"  # characters that RFC 6749 §2.3.1 form-encoding must carry
CLIENT = "agent app:1"  # a space and a colon: form-encoded inside HTTP Basic
BODY_SENTINEL = "BODY-SENTINEL-idp-raw"
SENTINELS = (ALICE_TOKEN, BOB_TOKEN, ACTOR_TOKEN, SECRET, BODY_SENTINEL, "SECRET-SENTINEL")

KEY = Identity.generate("ES256", name="agent-key")
ED_KEY = Identity.generate("EdDSA", name="agent-ed-key")

ALICE = Principal(id="alice", subject_token=ALICE_TOKEN)
BOB = Principal(id="bob", subject_token=BOB_TOKEN)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def idp_server() -> Iterator[IdP]:
    idp = IdP(
        clients={CLIENT: SECRET, "agent": "plain-secret"},
        client_keys={"agent-pkj": KEY.public, "agent-ed": ED_KEY.public},
        public_clients={"public-agent"},
        subjects={ALICE_TOKEN: "alice", BOB_TOKEN: "bob", ACTOR_TOKEN: "agent-1"},
    )
    with serve(idp.app) as base_url:
        idp.base_url = base_url
        yield idp


@pytest.fixture
def idp(idp_server: IdP) -> IdP:
    idp_server.reset()
    return idp_server


def exchange(idp: IdP, **kw: Any) -> TokenExchange:
    options: dict[str, Any] = {
        "client_id": CLIENT,
        "client_secret": SECRET,
        "audience": "api://mcp",
        "scopes": ["mcp.read"],
        "retry_backoff": 0.01,
    }
    options.update(kw)
    return TokenExchange(idp.token_url, **options)


def texts_of(exc: BaseException) -> str:
    """Everything an exception could show: message, repr, args, details, chained exceptions."""
    parts = [str(exc), repr(exc), repr(exc.args)]
    if isinstance(exc, AuthorizationError):
        parts += [json.dumps(exc.to_dict()), repr(exc.details)]
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            parts.append(texts_of(chained))
    return "\n".join(parts)


def assert_clean(text: str) -> None:
    for sentinel in SENTINELS:
        assert sentinel not in text


# --- acceptance 1: cache, single-flight, isolation, refresh -------------------------------------------


async def test_200_concurrent_calls_for_one_user_make_exactly_one_token_request(idp: IdP) -> None:
    idp.queue(Reply.slow(0.2))  # keep the one request in flight while the others pile up
    async with exchange(idp) as source:
        tokens = await asyncio.gather(*(source.get_token(ALICE) for _ in range(200)))
    assert idp.count == 1
    assert len({t.token for t in tokens}) == 1
    assert IdP.decode(tokens[0].token)["sub"] == "alice"


async def test_users_scopes_and_audiences_get_separate_entries(idp: IdP) -> None:
    async with exchange(idp) as source:
        calls = [
            (ALICE, None, None),
            (BOB, None, None),
            (ALICE, None, ["mcp.write"]),
            (ALICE, "api://other", None),
            (ALICE, None, ["mcp.write", "mcp.read"]),
        ]
        first = [await source.get_token(p, audience=a, scopes=s) for p, a, s in calls]
        again = [await source.get_token(p, audience=a, scopes=s) for p, a, s in calls]
    assert idp.count == len(calls)
    assert len({t.token for t in first}) == len(calls)
    assert [t.token for t in again] == [t.token for t in first]
    issued = [IdP.decode(t.token) for t in first]
    assert [c["sub"] for c in issued] == ["alice", "bob", "alice", "alice", "alice"]
    assert [c["aud"] for c in issued] == [["api://mcp"]] * 3 + [["api://other"], ["api://mcp"]]
    assert [c["scope"] for c in issued] == ["mcp.read", "mcp.read", "mcp.write", "mcp.read", "mcp.read mcp.write"]
    assert first[4].scopes == frozenset({"mcp.read", "mcp.write"})


async def test_same_user_with_a_new_subject_token_is_a_new_entry(idp: IdP) -> None:
    idp.subjects["SUBJ-SENTINEL-alice-rotated"] = "alice"
    rotated = Principal(id="alice", subject_token="SUBJ-SENTINEL-alice-rotated")
    async with exchange(idp) as source:
        a = await source.get_token(ALICE)
        b = await source.get_token(rotated)
    assert idp.count == 2
    assert a.token != b.token


async def test_an_expired_entry_is_refreshed(idp: IdP) -> None:
    clock = FakeClock()
    idp.expires_in = 60
    async with exchange(idp, cache=TokenCache(clock=clock, skew=30)) as source:
        first = await source.get_token(ALICE)
        assert first.expires_at == clock.now + 60
        clock.advance(29.9)  # still 30.1 s left: reused
        assert (await source.get_token(ALICE)).token == first.token
        assert idp.count == 1
        clock.advance(0.1)  # within the 30 s skew: refreshed before it expires
        second = await source.get_token(ALICE)
    assert idp.count == 2
    assert second.token != first.token
    assert IdP.decode(second.token)["sub"] == "alice"


async def test_subject_token_is_held_only_as_a_fingerprint(idp: IdP) -> None:
    async with exchange(idp) as source:
        await source.get_token(ALICE)
        await source.get_token(BOB)
        cache = source.cache
        state = repr(cache) + repr(source) + repr(list(cache._entries.items())) + repr(cache._flights)
        keys = list(cache._entries)
    assert_clean(state)
    assert {k.subject for k in keys} == {ALICE.subject_digest, BOB.subject_digest}
    assert {k.principal for k in keys} == {"alice", "bob"}
    assert cache.in_flight == 0
    assert ALICE.fingerprint is not None and ALICE.fingerprint in repr(ALICE)


async def test_invalidate_forces_a_new_request_and_only_drops_the_given_token(idp: IdP) -> None:
    async with exchange(idp) as source:
        stale = await source.get_token(ALICE)
        source.invalidate(ALICE)
        fresh = await source.get_token(ALICE)
        assert idp.count == 2 and fresh.token != stale.token
        # A late invalidation for the stale token must not throw away the fresh one.
        source.invalidate(ALICE, token=stale)
        assert (await source.get_token(ALICE)).token == fresh.token
        assert idp.count == 2
        source.invalidate(ALICE, token=fresh)
        await source.get_token(ALICE)
    assert idp.count == 3


async def test_many_401s_with_the_same_stale_token_cause_one_reobtain(idp: IdP) -> None:
    async with exchange(idp) as source:
        stale = await source.get_token(ALICE)
        idp.queue(Reply.slow(0.1))

        async def after_401() -> AccessToken:
            source.invalidate(ALICE, token=stale)
            return await source.get_token(ALICE)

        fresh = await asyncio.gather(*(after_401() for _ in range(50)))
    assert idp.count == 2
    assert len({t.token for t in fresh}) == 1


def test_a_source_outlives_its_event_loop(idp: IdP) -> None:
    source = exchange(idp)

    async def first_loop() -> AccessToken:
        token = await source.get_token(ALICE)
        # Close the pool's sockets while their loop runs, but leave the (closed) client in place:
        # a source that reused it from another loop would fail.
        assert source._http is not None
        await source._http.aclose()
        return token

    async def second_loop() -> AccessToken:
        token = await source.get_token(ALICE)  # a new loop: the source opens a new client
        await source.aclose()
        assert source._http is None
        return token

    first = asyncio.run(first_loop())
    source.invalidate(ALICE)
    second = asyncio.run(second_loop())
    assert asyncio.run(source.get_token(ALICE)) == second  # the cache still serves it
    assert idp.count == 2 and first.token != second.token


# --- acceptance 2: retry policy, typed errors, no leaks ------------------------------------------------


async def test_503_once_then_200_succeeds_after_exactly_two_requests(idp: IdP) -> None:
    idp.queue(Reply.unavailable(503))
    async with exchange(idp) as source:
        token = await source.get_token(ALICE)
    assert idp.count == 2
    assert IdP.decode(token.token)["sub"] == "alice"


@pytest.mark.parametrize("status", [429, 500, 502, 504])
async def test_other_transient_statuses_are_retried_once(idp: IdP, status: int) -> None:
    idp.queue(Reply.unavailable(status))
    async with exchange(idp) as source:
        await source.get_token(ALICE)
    assert idp.count == 2


async def test_503_twice_is_a_retryable_typed_error(idp: IdP) -> None:
    idp.queue(Reply.unavailable(503, body=BODY_SENTINEL.encode()), Reply.unavailable(503))
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await source.get_token(ALICE)
    assert idp.count == 2
    exc = caught.value
    assert exc.retryable is True
    assert exc.reason == "exchange_unavailable"
    assert exc.code == "token_exchange_failed"
    assert exc.details["status"] == 503
    assert_clean(texts_of(exc))


async def test_400_invalid_grant_is_not_retried(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mcpclient_auth")
    description = f"subject {ALICE_TOKEN} rejected for {CLIENT}:{SECRET} {BODY_SENTINEL}"
    idp.queue(Reply.error("invalid_grant", description))
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(ALICE)
    assert idp.count == 1
    exc = caught.value
    assert exc.retryable is False
    assert exc.reason == "exchange_rejected"
    assert exc.details["error"] == "invalid_grant"
    assert exc.details["status"] == 400
    assert "invalid_grant" in str(exc)
    assert_clean(texts_of(exc))
    assert_clean("\n".join(r.getMessage() for r in caplog.records))


async def test_an_error_code_that_is_not_a_plain_code_is_not_repeated(idp: IdP) -> None:
    idp.queue(Reply.error(f"bad {ALICE_TOKEN} <script>"))
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(ALICE)
    assert caught.value.details["error"] == "unknown"
    assert_clean(texts_of(caught.value))


async def test_wrong_client_secret_is_rejected_without_retry_or_leak(idp: IdP) -> None:
    async with exchange(idp, client_secret="SECRET-SENTINEL-wrong") as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(ALICE)
    assert idp.count == 1
    assert caught.value.details == {"reason": "exchange_rejected", "retryable": False, "status": 401, "error": "invalid_client"}
    assert_clean(texts_of(caught.value))


async def test_unknown_subject_is_rejected(idp: IdP) -> None:
    stranger = Principal(id="mallory", subject_token="SUBJ-SENTINEL-unknown")
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeRejected) as caught:
            await source.get_token(stranger)
    assert caught.value.details["error"] == "invalid_grant"
    assert "SUBJ-SENTINEL-unknown" not in texts_of(caught.value)


async def test_a_non_transient_5xx_fails_at_once(idp: IdP) -> None:
    idp.queue(Reply.unavailable(501))
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await source.get_token(ALICE)
    assert idp.count == 1
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("reply", "field"),
    [
        (Reply.raw(b"{not json " + BODY_SENTINEL.encode()), None),
        (Reply.raw(b"[1, 2]"), None),
        (Reply.raw(b'{"access_token": "a", "access_token": "b", "token_type": "Bearer"}'), None),
        (Reply.token(drop=("access_token",)), "access_token"),
        (Reply.token(drop=("token_type",)), "token_type"),
        (Reply.token(token_type="DPoP"), "token_type"),
        (Reply.token(drop=("issued_token_type",)), "issued_token_type"),
        (Reply.token(expires_in="3600"), "expires_in"),
        (Reply.token(expires_in=-1), "expires_in"),
        (Reply.token(scope=["mcp.read"]), "scope"),
        (Reply.token(access_token=f"has space {BODY_SENTINEL}"), "access_token"),
        (Reply.raw(b"", status=302), None),
    ],
)
async def test_unusable_responses_are_invalid_token_response(idp: IdP, reply: Reply, field: str | None) -> None:
    idp.queue(reply)
    async with exchange(idp) as source:
        with pytest.raises(InvalidTokenResponse) as caught:
            await source.get_token(ALICE)
    assert idp.count == 1
    assert caught.value.retryable is False
    assert caught.value.reason == "invalid_response"
    if field is not None:
        assert caught.value.details["field"] == field
    assert_clean(texts_of(caught.value))


async def test_requested_token_type_must_be_what_was_issued(idp: IdP) -> None:
    idp.queue(Reply.token(issued_token_type=ID_TOKEN_TYPE))
    async with exchange(idp, requested_token_type=JWT_TOKEN_TYPE) as source:
        with pytest.raises(InvalidTokenResponse):
            await source.get_token(ALICE)
        token = await source.get_token(ALICE)
    assert token.issued_token_type == JWT_TOKEN_TYPE


async def test_a_failure_is_not_cached(idp: IdP) -> None:
    idp.queue(Reply.error("invalid_grant"))
    async with exchange(idp) as source:
        with pytest.raises(TokenExchangeRejected):
            await source.get_token(ALICE)
        token = await source.get_token(ALICE)
    assert idp.count == 2
    assert IdP.decode(token.token)["sub"] == "alice"


async def test_every_waiter_of_a_failed_flight_gets_the_error(idp: IdP) -> None:
    idp.queue(Reply(kind="raw", status=400, body=b'{"error":"invalid_grant"}', delay=0.2))
    async with exchange(idp) as source:
        results = await asyncio.gather(*(source.get_token(ALICE) for _ in range(30)), return_exceptions=True)
        assert source.cache.in_flight == 0 and len(source.cache) == 0
    assert idp.count == 1
    assert all(isinstance(r, TokenExchangeRejected) for r in results)


async def test_missing_subject_token_fails_before_any_request(idp: IdP) -> None:
    async with exchange(idp) as source:
        with pytest.raises(MissingSubjectToken) as caught:
            await source.get_token(Principal(id="carol"))
    assert idp.count == 0
    assert caught.value.reason == "missing_subject_token"
    assert caught.value.retryable is False


# --- acceptance 3: identity provider down ---------------------------------------------------------------


async def test_idp_down_is_a_typed_retryable_error() -> None:
    source = TokenExchange(
        f"http://127.0.0.1:{free_port()}/token", client_id="agent", client_secret=SECRET, retry_backoff=0.01
    )
    async with source:
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await source.get_token(ALICE)
    assert caught.value.retryable is True
    assert caught.value.details["cause"] == "ConnectError"
    assert caught.value.details["attempts"] == 2
    assert_clean(texts_of(caught.value))


async def test_a_slow_idp_times_out_twice_then_fails(idp: IdP) -> None:
    idp.queue(Reply.slow(1.0), Reply.slow(1.0))
    async with exchange(idp, timeout=0.1) as source:
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await source.get_token(ALICE)
    assert caught.value.retryable is True
    assert idp.count == 2


async def test_timeouts_of_a_provided_client_are_transient_too(idp: IdP) -> None:
    idp.queue(Reply.slow(1.0))
    async with httpx.AsyncClient(timeout=0.1) as client:
        token = await exchange(idp, http_client=client).get_token(ALICE)
        assert not client.is_closed
    assert idp.count == 2
    assert IdP.decode(token.token)["sub"] == "alice"


# --- acceptance 7: request bodies field by field --------------------------------------------------------


def basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    assert scheme == "Basic"
    raw_id, _, raw_secret = base64.b64decode(value).decode("ascii").partition(":")
    return unquote_plus(raw_id), unquote_plus(raw_secret)


def check_assertion(assertion: str, *, client_id: str, audience: str, key: Identity) -> dict[str, Any]:
    header_b64, payload_b64, signature_b64 = assertion.split(".")
    assert key.public.verify(f"{header_b64}.{payload_b64}".encode(), b64url_decode(signature_b64))
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(payload_b64))
    assert header == {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    assert claims["iss"] == claims["sub"] == client_id
    assert claims["aud"] == audience
    assert 0 < claims["exp"] - claims["iat"] <= 60
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    return dict(claims)


async def test_rfc8693_body_with_client_secret_basic(idp: IdP) -> None:
    alice = Principal(id="alice", subject_token=ALICE_TOKEN, actor_token=ACTOR_TOKEN)
    async with exchange(
        idp,
        audience=["api://mcp", "api://mcp-2"],
        resource="https://mcp.example.com/mcp",
        scopes=["mcp.write", "mcp.read"],
        requested_token_type=ACCESS_TOKEN_TYPE,
    ) as source:
        assert source.auth_method == "client_secret_basic"
        token = await source.get_token(alice)
    (request,) = idp.requests
    assert request.auth_method == "client_secret_basic"
    assert basic_credentials(request.headers["authorization"]) == (CLIENT, SECRET)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "grant_type": [TOKEN_EXCHANGE],
        "subject_token": [ALICE_TOKEN],
        "subject_token_type": [ACCESS_TOKEN_TYPE],
        "actor_token": [ACTOR_TOKEN],
        "actor_token_type": [ACCESS_TOKEN_TYPE],
        "audience": ["api://mcp", "api://mcp-2"],
        "resource": ["https://mcp.example.com/mcp"],
        "scope": ["mcp.read mcp.write"],
        "requested_token_type": [ACCESS_TOKEN_TYPE],
    }
    assert token.issued_token_type == ACCESS_TOKEN_TYPE
    assert IdP.decode(token.token)["actor"] == "agent-1"


async def test_rfc8693_body_with_client_secret_post_and_id_token_subject(idp: IdP) -> None:
    alice = Principal(id="alice", subject_token=ALICE_TOKEN, subject_token_type=ID_TOKEN_TYPE)
    async with exchange(idp, auth_method="client_secret_post", actor_token=ACTOR_TOKEN, scopes=None) as source:
        await source.get_token(alice)
    (request,) = idp.requests
    assert request.auth_method == "client_secret_post"
    assert "authorization" not in request.headers
    assert request.fields == {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": ALICE_TOKEN,
        "subject_token_type": ID_TOKEN_TYPE,
        "actor_token": ACTOR_TOKEN,
        "actor_token_type": ACCESS_TOKEN_TYPE,
        "audience": "api://mcp",
        "client_id": CLIENT,
        "client_secret": SECRET,
    }


@pytest.mark.parametrize(("client_id", "key"), [("agent-pkj", KEY), ("agent-ed", ED_KEY)])
async def test_rfc8693_body_with_private_key_jwt(idp: IdP, client_id: str, key: Identity) -> None:
    async with TokenExchange(
        idp.token_url, client_id=client_id, client_key=key, scopes="mcp.read", assertion_audience="token_endpoint"
    ) as source:
        assert source.auth_method == "private_key_jwt"
        await source.get_token(ALICE)
        source.invalidate(ALICE)
        await source.get_token(ALICE)
    first, second = idp.requests
    assert first.auth_method == "private_key_jwt"  # the endpoint verified the signature with PyJWT
    assert "authorization" not in first.headers
    claims = []
    for request in (first, second):
        assertion = request.field("client_assertion")
        claims.append(check_assertion(assertion, client_id=client_id, audience=idp.token_url, key=key))
        assert {k: v for k, v in request.fields.items() if k != "client_assertion"} == {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": ALICE_TOKEN,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": "mcp.read",
            "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        }
    assert claims[0]["jti"] != claims[1]["jti"]


async def test_rfc8693_public_client(idp: IdP) -> None:
    async with TokenExchange(idp.token_url, client_id="public-agent") as source:
        await source.get_token(ALICE)
    (request,) = idp.requests
    assert request.auth_method == "none"
    assert request.fields == {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": ALICE_TOKEN,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "client_id": "public-agent",
    }


async def test_entra_obo_body_with_tenant_and_client_secret_post(idp: IdP) -> None:
    source = EntraOnBehalfOf(
        client_id=CLIENT,
        client_secret=SECRET,
        tenant="contoso.onmicrosoft.com",
        authority=idp.base_url,
        scopes=["api://mcp-server/.default"],
    )
    async with source:
        assert source.auth_method == "client_secret_post"
        token = await source.get_token(ALICE)
    (request,) = idp.requests
    assert request.path == "/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert request.auth_method == "client_secret_post"
    assert request.fields == {
        "grant_type": JWT_BEARER,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "assertion": ALICE_TOKEN,
        "requested_token_use": "on_behalf_of",
        "scope": "api://mcp-server/.default",
    }
    claims = IdP.decode(token.token)
    assert (claims["sub"], claims["grant"], claims["scope"]) == ("alice", JWT_BEARER, "api://mcp-server/.default")
    assert token.issued_token_type is None  # Entra does not send it, and OBO does not require it


async def test_entra_obo_body_with_client_secret_basic(idp: IdP) -> None:
    source = EntraOnBehalfOf(
        client_id=CLIENT,
        client_secret=SECRET,
        auth_method="client_secret_basic",
        token_endpoint=idp.token_url,
        scopes=["api://mcp-server/mcp.read", "offline_access"],
    )
    async with source:
        await source.get_token(BOB)
    (request,) = idp.requests
    assert basic_credentials(request.headers["authorization"]) == (CLIENT, SECRET)
    assert request.fields == {
        "grant_type": JWT_BEARER,
        "client_id": CLIENT,
        "assertion": BOB_TOKEN,
        "requested_token_use": "on_behalf_of",
        "scope": "api://mcp-server/mcp.read offline_access",
    }


async def test_entra_obo_body_with_private_key_jwt_and_audience(idp: IdP) -> None:
    source = EntraOnBehalfOf(client_id="agent-pkj", client_key=KEY, token_endpoint=idp.token_url)
    async with source:
        token = await source.get_token(ALICE, audience="api://mcp-server")
    (request,) = idp.requests
    check_assertion(request.field("client_assertion"), client_id="agent-pkj", audience=idp.token_url, key=KEY)
    assert {k: v for k, v in request.fields.items() if k != "client_assertion"} == {
        "grant_type": JWT_BEARER,
        "client_id": "agent-pkj",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "assertion": ALICE_TOKEN,
        "requested_token_use": "on_behalf_of",
        "scope": "api://mcp-server/.default",
    }
    assert IdP.decode(token.token)["sub"] == "alice"


async def test_entra_obo_retries_and_fails_like_the_others(idp: IdP) -> None:
    idp.queue(Reply.unavailable(429), Reply.unavailable(503))
    source = EntraOnBehalfOf(
        client_id=CLIENT, client_secret=SECRET, token_endpoint=idp.token_url, scopes="api://x/.default",
        retry_backoff=0.01,
    )
    async with source:
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await source.get_token(ALICE)
    assert idp.count == 2 and caught.value.retryable is True
    assert_clean(texts_of(caught.value))


async def test_client_credentials_body_and_one_token_for_every_user(idp: IdP) -> None:
    source = ClientCredentials(
        idp.token_url, client_id="agent", client_secret="plain-secret", scopes=["tools.list"], audience="api://mcp"
    )
    async with source:
        tokens = [await source.get_token(p) for p in (ALICE, BOB, None)]
        tokens.append(await source.get_token())
        other = await source.get_token(scopes=["tools.call"])
    assert idp.count == 2
    assert len({t.token for t in tokens}) == 1
    first, second = idp.requests
    assert basic_credentials(first.headers["authorization"]) == ("agent", "plain-secret")
    assert first.fields == {"grant_type": CLIENT_CREDENTIALS, "scope": "tools.list", "audience": "api://mcp"}
    assert second.fields["scope"] == "tools.call"
    assert IdP.decode(tokens[0].token)["sub"] == "agent"
    assert IdP.decode(other.token)["scope"] == "tools.call"
