"""What every token source returns and promises: :class:`AccessToken` and :class:`TokenSource`.

    token = await source.get_token(Principal(id="alice", subject_token=t), audience="api://mcp")
    request.headers["Authorization"] = token.authorization_header()
    ...
    source.invalidate(principal, audience="api://mcp", token=token)    # after a 401 invalid_token

Pure module: no I/O, no httpx.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import ConfigurationError, InvalidTokenResponse
from ..principal import ACCESS_TOKEN_TYPE, token_digest

if TYPE_CHECKING:
    from ..principal import Principal

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_SKEW",
    "ID_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "REFRESH_TOKEN_TYPE",
    "SAML1_TOKEN_TYPE",
    "SAML2_TOKEN_TYPE",
    "AccessToken",
    "DiscoversResource",
    "TokenSource",
    "normalise_scopes",
]

# RFC 8693 §3 token type identifiers (ACCESS_TOKEN_TYPE is re-exported from principal.py).
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
SAML1_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:saml1"
SAML2_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:saml2"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"

#: Seconds before ``expires_at`` at which a token counts as expired (DESIGN §4): a token must still
#: be valid when the request that carries it reaches the server.
DEFAULT_SKEW = 30.0

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: A token goes into an HTTP header: visible ASCII only (RFC 6750 b64token is a subset).
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
#: The only parts of an OAuth error body or challenge that are repeated in a message, a refusal or
#: the ledger (``error`` codes, scope names): short token-like strings. Anything else there is text
#: the other side chose and is never shown.
SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def normalise_scopes(scopes: str | Iterable[str] | None) -> tuple[str, ...]:
    """Scopes as a sorted tuple of unique RFC 6749 scope tokens (a string is split on spaces).

        normalise_scopes("b a a")        # ('a', 'b')
        normalise_scopes(["x", "y"])     # ('x', 'y')
    """
    if scopes is None:
        return ()
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    for item in items:
        if not isinstance(item, str) or not _SCOPE_TOKEN.fullmatch(item):
            raise ConfigurationError("a scope must be a non-empty RFC 6749 scope-token (no spaces or quotes)")
    return tuple(sorted(set(items)))


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token with its type, expiry and granted scopes. ``repr`` shows a fingerprint only.

        AccessToken("eyJ...", expires_at=time.time() + 3600, scopes={"mcp.read"})
        token.expired()                 # True 30 s before expires_at
        token.authorization_header()    # 'Bearer eyJ...'

    ``expires_at`` is epoch seconds or ``None`` (unknown: the issuer did not say). ``token_type`` is
    ``"Bearer"``, ``"DPoP"`` (RFC 9449: bound to the source's DPoP key; every request that carries it
    needs a proof made with that key) or RFC 8693's ``"N_A"`` (an issued token that is not an access
    token).
    """

    token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    scopes: frozenset[str] = frozenset()
    issued_token_type: str | None = None
    _fingerprint: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not HEADER_SAFE.fullmatch(self.token):
            raise ConfigurationError("an access token must be a non-empty string of visible ASCII")
        scopes: object = self.scopes
        if not isinstance(scopes, frozenset):  # a set, list or space-separated string is accepted
            object.__setattr__(self, "scopes", frozenset(normalise_scopes(scopes)))  # type: ignore[arg-type]
        object.__setattr__(self, "_fingerprint", token_digest(self.token)[:16])

    @property
    def fingerprint(self) -> str:
        """``b64url(SHA-256(token))[:16]``: safe to log and to put in ledgers."""
        return self._fingerprint

    def expired(self, now: float | None = None, skew: float = DEFAULT_SKEW) -> bool:
        """True when ``now`` is within ``skew`` seconds of ``expires_at`` (never for unknown expiry)."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at - skew

    @property
    def dpop_bound(self) -> bool:
        """True for a DPoP-bound token (RFC 9449): it is useless without a proof made with its key."""
        return self.token_type == "DPoP"

    def authorization_header(self) -> str:
        """``"Bearer <token>"`` (RFC 6750 §2.1) or, for a DPoP-bound token, ``"DPoP <token>"``
        (RFC 9449 §7.1; the request also needs its ``DPoP`` proof header)."""
        if self.token_type not in ("Bearer", "DPoP"):
            raise InvalidTokenResponse(
                f"the issued token has token_type {self.token_type!r}; only Bearer and DPoP tokens "
                "can be sent",
                token_type=self.token_type,
            )
        return f"{self.token_type} {self.token}"

    def __repr__(self) -> str:
        return (
            f"AccessToken(fingerprint={self._fingerprint!r}, token_type={self.token_type!r}, "
            f"expires_at={self.expires_at!r}, scopes={sorted(self.scopes)!r}, "
            f"issued_token_type={self.issued_token_type!r})"
        )

    __str__ = __repr__


@runtime_checkable
class TokenSource(Protocol):
    """Where a run gets the user's access token for an MCP server (DESIGN §4).

    ``audience=None`` and ``scopes=None`` mean the source's configured defaults; non-``None`` values
    replace them (a step-up passes the full union). ``invalidate`` forgets the cached token for the
    same arguments; with ``token=`` it only forgets that exact token, so that many requests failing
    with the same stale token cause one re-obtain, not one each.
    """

    async def get_token(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken: ...

    def invalidate(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None: ...


@runtime_checkable
class DiscoversResource(Protocol):
    """A token source that discovers its authorization server itself (RFC 9728, then RFC 8414), like
    :class:`~mcpclient_auth.authz.AuthorizationCode`.

    When an MCP endpoint's 401 names its protected-resource metadata (``resource_metadata``, which a
    server may publish *only* there), a run in ``initial_scope="challenge"`` mode fetches it, checks
    that its ``resource`` names the endpoint, and hands the URL to the source before asking it for a
    token. The source keeps validating what it fetches on its own.
    """

    def use_resource_metadata(self, url: str) -> None: ...
