"""DPoP on the request path (RFC 9449 §7, §9): which key proves the run's token, the proof of each send,
and the resource server's nonces. Plain functions over the run's token, its source and the request;
no I/O, no httpx (the response is read through its ``headers`` only).

Per send to the run's endpoint (the request hook runs for every send: resends after a 401/403 and
redirect hops included):

    credential = credential_for(run, source, token)     # Authorization + the key that proves it
    proof = proof_for(credential, "POST", url)          # fresh jti, htm/htu, ath, the RS nonce
    request.headers["DPoP"] = proof.token               # covered by the RFC 9421 signature

and per answer, in the 401/403 flow (:mod:`._hooks.auth`):

    learn_nonce(attempt, response)                      # a DPoP-Nonce from the endpoint is kept
    if nonce_challenge(attempt, response): ...          # 401 use_dpop_nonce: resend once, fresh proof
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .authz.dpop import DPOP_NONCE_HEADER, USE_DPOP_NONCE, DPoP, DPoPProof, valid_nonce
from .authz.www_authenticate import parse_challenges
from .errors import ChallengeMalformed, DPoPKeyMissing

if TYPE_CHECKING:
    from ._hooks.auth import Attempt
    from .authz.base import AccessToken, TokenSource

__all__ = ["Credential", "credential_for", "learn_nonce", "nonce_challenge", "proof_for"]


@dataclass(frozen=True, slots=True)
class Credential:
    """What one send presents: the ``Authorization`` value and, for a DPoP-bound token, the key that
    proves it. Nothing here appears in ``repr``."""

    header: str = field(repr=False)
    token: AccessToken | None = field(default=None, repr=False)
    dpop: DPoP | None = None

    def __repr__(self) -> str:
        return f"Credential(dpop={self.dpop!r})"


def credential_for(required: DPoP | None, source: TokenSource, token: AccessToken) -> Credential:
    """The credential for ``token`` from ``source``; ``required`` is the run's ``dpop=`` (if any).

    A DPoP-bound token needs the source's key (a token is bound to the key its source proved with);
    a run configured with ``dpop=`` sends nothing else: a bearer token, or a token bound to another key,
    is refused (:class:`~mcpclient_auth.errors.DPoPKeyMissing`), never sent in its place.
    """
    header = token.authorization_header()
    if not token.dpop_bound:
        if required is not None:
            raise DPoPKeyMissing(
                "the run requires DPoP (AgentRun(dpop=...)) but its token source issued a bearer token; "
                "give the source the same dpop= key"
            )
        return Credential(header, token, None)
    key = getattr(source, "dpop", None)
    if not isinstance(key, DPoP):
        raise DPoPKeyMissing("the token source issued a DPoP-bound token but has no dpop= key to prove it")
    if required is not None and required.thumbprint != key.thumbprint:
        raise DPoPKeyMissing("the token source proves with another DPoP key than the run's dpop=")
    return Credential(header, token, key)


def proof_for(credential: Credential, method: str, url: str) -> DPoPProof | None:
    """A fresh proof for one send of ``credential`` (``None`` for a bearer token): ``ath`` binds the
    token, ``nonce`` is the last one this resource server's origin gave."""
    dpop, token = credential.dpop, credential.token
    if dpop is None or token is None:
        return None
    return dpop.proof(method, url, access_token=token.token, nonce=dpop.nonce_for("rs", url))


def _bound_key(attempt: Attempt) -> DPoP | None:
    token = attempt.token
    if token is None or not token.dpop_bound:
        return None
    key = getattr(attempt.source, "dpop", None)
    return key if isinstance(key, DPoP) else None


def proved(attempt: Attempt) -> bool:
    """True when ``attempt``'s last send carried a DPoP-bound token (and so a proof)."""
    return _bound_key(attempt) is not None


def _request_url(response: Any) -> str | None:
    try:
        return str(response.request.url)
    except (AttributeError, RuntimeError):
        return None


def learn_nonce(attempt: Attempt, response: Any) -> str | None:
    """Keep the ``DPoP-Nonce`` of an answer to a DPoP-proved send (RFC 9449 §9: any status may carry
    a fresh one); returns the nonce kept, if any."""
    key = _bound_key(attempt)
    if key is None:
        return None  # a bearer send (the usual case): no URL to build
    url = _request_url(response)
    if url is None:
        return None
    nonce = response.headers.get(DPOP_NONCE_HEADER)
    if nonce is None or not key.remember_nonce("rs", url, nonce):
        return None
    return str(nonce)


def nonce_challenge(attempt: Attempt, response: Any) -> bool:
    """True for a 401 whose ``DPoP`` challenge says ``use_dpop_nonce`` and that carries a usable
    ``DPoP-Nonce``, on a send proved with a DPoP key, when this request has not yet been resent for a
    nonce (one resend per request: a server that keeps asking is refused, not looped on)."""
    if response.status_code != 401 or attempt.dpop_nonce_resent or _bound_key(attempt) is None:
        return False
    try:
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
    except ChallengeMalformed:
        return False
    asks = any(c.scheme.lower() == "dpop" and c.params.get("error") == USE_DPOP_NONCE for c in challenges)
    return asks and valid_nonce(response.headers.get(DPOP_NONCE_HEADER))
