"""The user an agent acts for: an id plus, optionally, the user's own token to exchange.

    alice = Principal(id="alice", subject_token=sso_access_token)
    alice.fingerprint          # 'q1w2e3r4t5y6u7i8' — b64url(SHA-256(subject_token))[:16]
    repr(alice)                # Principal(id='alice', subject_token=<sha256:q1w2e3r4t5y6u7i8>, ...)

A :class:`Principal` travels through runs, hooks, token sources and ledgers, so its ``repr`` never
shows a token: only its fingerprint. Token sources key their caches by :attr:`Principal.subject_digest`
(the full SHA-256), never by the token itself. Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ._encoding import b64url_encode
from .errors import ConfigurationError

__all__ = ["ACCESS_TOKEN_TYPE", "Principal", "token_digest"]

#: RFC 8693 §3 token type of an OAuth access token: the default ``subject_token_type``. The other
#: token-type URNs live in :mod:`mcpclient_auth.authz.base`; this one is defined here because the
#: authz package imports this module, not the other way round.
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

#: Length of the short fingerprint shown in ``repr`` and ledgers (DESIGN §5).
_FINGERPRINT_LENGTH = 16


def token_digest(token: str) -> str:
    """``b64url(SHA-256(token))`` (43 characters): what caches key by instead of the token."""
    return b64url_encode(hashlib.sha256(token.encode("utf-8")).digest())


def _check_token(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string or None")
    # A token ends up in a form body or a header: refuse whitespace and controls outright rather
    # than sending something an IdP might parse differently from us.
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ConfigurationError(f"{what} contains whitespace, control or non-ASCII characters")


@dataclass(frozen=True)
class Principal:
    """A user identity, optionally with the user's token (the RFC 8693 subject token).

    ``subject_token`` is what :class:`~mcpclient_auth.authz.TokenExchange` exchanges and what
    :class:`~mcpclient_auth.authz.EntraOnBehalfOf` sends as ``assertion``; ``actor_token`` (optional)
    is the RFC 8693 actor token for delegation. Equality and hashing include the tokens (two
    principals with different tokens are different), but neither ``repr`` nor ``str`` shows them.

        Principal(id="alice")                                      # static tokens / client credentials
        Principal(id="bob", subject_token=id_token, subject_token_type=ID_TOKEN_TYPE)
    """

    id: str
    subject_token: str | None = field(default=None, repr=False)
    subject_token_type: str = ACCESS_TOKEN_TYPE
    actor_token: str | None = field(default=None, repr=False)
    actor_token_type: str | None = None
    # Derived once: the hot path (cache lookups) must not hash the token on every call.
    _subject_digest: str | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigurationError("Principal.id must be a non-empty string")
        _check_token(self.subject_token, "subject_token")
        _check_token(self.actor_token, "actor_token")
        if not isinstance(self.subject_token_type, str) or not self.subject_token_type:
            raise ConfigurationError("subject_token_type must be a non-empty string (a token-type URN)")
        if self.actor_token_type is not None and self.actor_token is None:
            raise ConfigurationError("actor_token_type given without an actor_token")
        if self.actor_token_type is not None and not isinstance(self.actor_token_type, str):
            raise ConfigurationError("actor_token_type must be a string (a token-type URN)")
        digest = token_digest(self.subject_token) if self.subject_token is not None else None
        object.__setattr__(self, "_subject_digest", digest)

    @property
    def subject_digest(self) -> str | None:
        """Full ``b64url(SHA-256(subject_token))``, or ``None`` without a subject token."""
        return self._subject_digest

    @property
    def fingerprint(self) -> str | None:
        """``b64url(SHA-256(subject_token))[:16]`` (safe to log), or ``None``."""
        digest = self._subject_digest
        return digest[:_FINGERPRINT_LENGTH] if digest is not None else None

    @property
    def actor_fingerprint(self) -> str | None:
        """The fingerprint of ``actor_token``, or ``None``."""
        if self.actor_token is None:
            return None
        return token_digest(self.actor_token)[:_FINGERPRINT_LENGTH]

    def __repr__(self) -> str:
        parts = [f"id={self.id!r}"]
        if self.subject_token is not None:
            parts.append(f"subject_token=<sha256:{self.fingerprint}>")
            parts.append(f"subject_token_type={self.subject_token_type!r}")
        if self.actor_token is not None:
            parts.append(f"actor_token=<sha256:{self.actor_fingerprint}>")
            if self.actor_token_type is not None:
                parts.append(f"actor_token_type={self.actor_token_type!r}")
        return f"Principal({', '.join(parts)})"

    __str__ = __repr__
