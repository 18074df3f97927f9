"""StaticTokens: per-user mapping or lookup, never another user's token (issue [authz])."""

from __future__ import annotations

import pytest

from mcpclient_auth.authz import AccessToken, StaticTokens
from mcpclient_auth.errors import ConfigurationError, NoTokenForPrincipal, TokenExchangeRejected
from mcpclient_auth.principal import Principal

ALICE = Principal(id="alice")
BOB = Principal(id="bob")
MALLORY = Principal(id="mallory")


async def test_mapping_gives_each_user_their_own_token() -> None:
    source = StaticTokens({"alice": "tok-alice", "bob": AccessToken("tok-bob", scopes=frozenset({"r"}))})
    assert (await source.get_token(ALICE)).token == "tok-alice"
    bob = await source.get_token(BOB, audience="api://x", scopes=["ignored"])
    assert bob.token == "tok-bob" and bob.scopes == frozenset({"r"})


async def test_unknown_user_is_a_typed_error_never_a_fallback() -> None:
    source = StaticTokens({"alice": "tok-alice"})
    with pytest.raises(NoTokenForPrincipal) as caught:
        await source.get_token(MALLORY)
    assert caught.value.reason == "unknown_principal" and caught.value.retryable is False
    assert "tok-alice" not in str(caught.value)


async def test_the_mapping_is_copied_at_construction() -> None:
    tokens = {"alice": "tok-alice"}
    source = StaticTokens(tokens)
    tokens["mallory"] = "tok-mallory"
    tokens["alice"] = "changed"
    with pytest.raises(NoTokenForPrincipal):
        await source.get_token(MALLORY)
    assert (await source.get_token(ALICE)).token == "tok-alice"


async def test_sync_and_async_lookups() -> None:
    seen: list[str] = []

    def sync_lookup(principal: Principal) -> str | None:
        seen.append(principal.id)
        return {"alice": "tok-a"}.get(principal.id)

    async def async_lookup(principal: Principal) -> AccessToken | None:
        return AccessToken("tok-b") if principal.id == "bob" else None

    assert (await StaticTokens(sync_lookup).get_token(ALICE)).token == "tok-a"
    assert (await StaticTokens(async_lookup).get_token(BOB)).token == "tok-b"
    with pytest.raises(NoTokenForPrincipal):
        await StaticTokens(sync_lookup).get_token(BOB)
    with pytest.raises(NoTokenForPrincipal):
        await StaticTokens(async_lookup).get_token(ALICE)
    # Not cached: every call consults the lookup, so rotated tokens are picked up at once.
    source = StaticTokens(sync_lookup)
    await source.get_token(ALICE)
    await source.get_token(ALICE)
    assert seen.count("alice") == 3


async def test_a_failing_lookup_is_wrapped_without_its_message() -> None:
    def broken(principal: Principal) -> str:
        raise RuntimeError("vault said SECRET-SENTINEL")

    with pytest.raises(NoTokenForPrincipal) as caught:
        await StaticTokens(broken).get_token(ALICE)
    assert caught.value.reason == "lookup_failed"
    assert "RuntimeError" in str(caught.value)
    assert "SECRET-SENTINEL" not in str(caught.value) and caught.value.__cause__ is None


async def test_typed_errors_from_a_lookup_pass_through() -> None:
    async def rejecting(principal: Principal) -> str:
        raise TokenExchangeRejected("no")

    with pytest.raises(TokenExchangeRejected):
        await StaticTokens(rejecting).get_token(ALICE)


async def test_an_expired_token_is_refused_not_sent() -> None:
    now = 1_000.0
    source = StaticTokens({"alice": AccessToken("tok", expires_at=now + 40)}, clock=lambda: now)
    assert (await source.get_token(ALICE)).token == "tok"
    later = StaticTokens({"alice": AccessToken("tok", expires_at=now + 30)}, clock=lambda: now)
    with pytest.raises(NoTokenForPrincipal) as caught:
        await later.get_token(ALICE)
    assert caught.value.reason == "token_expired"


async def test_invalidate_is_harmless() -> None:
    source = StaticTokens({"alice": "tok"})
    token = await source.get_token(ALICE)
    source.invalidate(ALICE, token=token)
    assert (await source.get_token(ALICE)).token == "tok"


def test_bad_configuration() -> None:
    for bad in ({"": "tok"}, {"alice": ""}, {"alice": 3}, 42):
        with pytest.raises(ConfigurationError):
            StaticTokens(bad)  # type: ignore[arg-type]


def test_repr_hides_tokens() -> None:
    assert "SECRET" not in repr(StaticTokens({"alice": "SECRET-tok"}))
    assert "alice" in repr(StaticTokens({"alice": "SECRET-tok"}))
