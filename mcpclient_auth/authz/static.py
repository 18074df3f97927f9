"""Per-user tokens you already have: a mapping or a lookup function, never a shared fallback.

    source = StaticTokens({"alice": alice_token, "bob": AccessToken(bob_token, expires_at=...)})
    source = StaticTokens(lambda principal: vault.token_for(principal.id))    # sync or async
    token = await source.get_token(Principal(id="alice"))

A principal without an entry gets :class:`~mcpclient_auth.errors.NoTokenForPrincipal`, never some
other user's token; an :class:`AccessToken` whose ``expires_at`` has passed (minus ``skew``) is refused
the same way (reason ``token_expired``) rather than sent stale. ``audience`` and ``scopes`` cannot
change a static token: they are accepted and ignored. Results are not cached, so a lookup function
sees every call and can rotate tokens; ``invalidate`` has nothing to forget.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeAlias

from ..errors import ConfigurationError, McpClientAuthError, NoTokenForPrincipal
from ..principal import Principal
from .base import DEFAULT_SKEW, AccessToken

__all__ = ["StaticTokens", "TokenLookup"]

_TokenLike: TypeAlias = str | AccessToken
#: ``principal -> token`` (a string or an AccessToken), ``None`` when the user has none; may be async.
TokenLookup: TypeAlias = Callable[[Principal], "_TokenLike | Awaitable[_TokenLike | None] | None"]


def _as_access_token(value: object) -> AccessToken:
    if isinstance(value, AccessToken):
        return value
    if isinstance(value, str):
        return AccessToken(value)
    raise ConfigurationError("a static token must be a string or an AccessToken")


class StaticTokens:
    """A :class:`~mcpclient_auth.authz.TokenSource` over per-user tokens you provide."""

    __slots__ = ("_clock", "_lookup", "_skew", "_tokens")

    def __init__(
        self,
        tokens: Mapping[str, str | AccessToken] | TokenLookup,
        *,
        skew: float = DEFAULT_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens: dict[str, AccessToken] | None
        self._lookup: TokenLookup | None
        if isinstance(tokens, Mapping):
            # Copied and converted once: later edits to the caller's dict do not leak in half-done.
            self._tokens = {}
            for principal_id, value in tokens.items():
                if not isinstance(principal_id, str) or not principal_id:
                    raise ConfigurationError("StaticTokens keys must be non-empty principal ids")
                self._tokens[principal_id] = _as_access_token(value)
            self._lookup = None
        elif callable(tokens):
            self._tokens = None
            self._lookup = tokens
        else:
            raise ConfigurationError("StaticTokens takes a mapping {principal_id: token} or a callable")
        self._skew = float(skew)
        self._clock = clock

    async def get_token(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken:
        """This principal's own token; :class:`NoTokenForPrincipal` if there is none usable."""
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        if self._tokens is not None:
            token = self._tokens.get(principal.id)
        else:
            token = await self._look_up(principal)
        if token is None:
            raise NoTokenForPrincipal(
                f"no token is configured for principal {principal.id!r}", principal=principal.id
            )
        if token.expired(self._clock(), self._skew):
            raise NoTokenForPrincipal(
                f"the token configured for principal {principal.id!r} has expired",
                reason="token_expired",
                principal=principal.id,
            )
        return token

    async def _look_up(self, principal: Principal) -> AccessToken | None:
        assert self._lookup is not None
        try:
            result = self._lookup(principal)
            if inspect.isawaitable(result):
                result = await result
            return None if result is None else _as_access_token(result)
        except McpClientAuthError:
            raise
        except Exception as exc:
            # The lookup is user code; its message is not ours to vouch for, so only its type shows.
            raise NoTokenForPrincipal(
                f"the token lookup for principal {principal.id!r} failed ({type(exc).__name__})",
                reason="lookup_failed",
                principal=principal.id,
            ) from None

    def invalidate(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None:
        """Nothing is cached, so nothing to forget; re-obtaining returns the same configured token."""

    def __repr__(self) -> str:
        if self._tokens is not None:
            return f"StaticTokens(principals={sorted(self._tokens)!r})"
        return f"StaticTokens(lookup={getattr(self._lookup, '__qualname__', type(self._lookup).__name__)!r})"
