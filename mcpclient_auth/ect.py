"""ECT (draft-nennemann-wimse-ect): one signed node of a run's execution DAG per call.

    ect = ExecutionContextToken.mint(agent, audience="https://mcp.example/mcp", exec_act="mcp.search",
                                     pred=[mandate.jti], wid=mandate.jti, inp_hash=sha256_b64url(body))
    request.headers["Execution-Context"] = ect.token

    store = MemoryReplayStore()
    seen = ExecutionContextToken.verify(ect.token, trust, audience="https://mcp.example/mcp", replay=store)
    seen.pred, seen.exec_act, seen.signer.kid

Claims: required ``iss``, ``aud`` (a list), ``iat``, ``exp``, ``jti`` (UUID), ``exec_act``, ``pred``
(at most :data:`MAX_PREDS` token ids; ``[]`` is a root); optional ``wid``, ``inp_hash`` / ``out_hash``
(base64url of a raw SHA-256, unpadded, no prefix) and ``ect_ext`` (an object of at most
:data:`MAX_EXT_BYTES` bytes and :data:`MAX_EXT_DEPTH` levels). ``typ`` is ``exec+jwt``; the -00 name
``wimse-exec+jwt`` (with ``par`` for ``pred``) is accepted on input.

:meth:`~ExecutionContextToken.mint` runs once per MCP call, so it checks only what keeps its output
valid (cheap type, pattern and length checks) and signs through :func:`mcpclient_auth.jose.encode`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import jose
from ._claims import (
    HASH_PATTERN,
    UUID_PATTERN,
    audience_list,
    check_action,
    check_audience,
    check_hash,
    check_preds,
    check_times,
    check_uuid,
    new_uuid4,
    optional_str,
    require_int,
    require_str,
)
from ._encoding import compact_json
from .errors import ClaimsInvalid, ExtensionTooLarge, InvalidTokenType
from .keys import Identity, PublicKey, TrustStore
from .replay import ReplayClaim, ReplayStore, key_partition

__all__ = [
    "DEFAULT_ECT_TTL",
    "DEFAULT_MAX_AGE",
    "ECT_TYPS",
    "MAX_EXT_BYTES",
    "MAX_EXT_DEPTH",
    "MAX_PREDS",
    "ExecutionContextToken",
]

DEFAULT_ECT_TTL = 600
#: How old (by ``iat``) an ECT may be when verified, whatever its ``exp`` says.
DEFAULT_MAX_AGE = 900
MAX_PREDS = 100
MAX_EXT_BYTES = 4096
MAX_EXT_DEPTH = 5
#: Accepted on input; :meth:`ExecutionContextToken.mint` always writes ``exec+jwt``.
ECT_TYPS: tuple[str, ...] = (jose.ECT_TYP, jose.ECT_TYP_LEGACY)


def _check_ext(value: Any) -> dict[str, Any]:
    """``ect_ext``: a JSON object, nested at most :data:`MAX_EXT_DEPTH` deep (the object itself is
    level 1), at most :data:`MAX_EXT_BYTES` bytes as compact UTF-8 JSON."""
    if not isinstance(value, dict):
        raise ClaimsInvalid("claim 'ect_ext' must be a JSON object", claim="ect_ext")
    # Depth first and without recursion: a hostile or careless value must not reach the recursive
    # JSON encoder (or Python's recursion limit) before it is refused.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXT_DEPTH:
            raise ExtensionTooLarge(
                f"'ect_ext' is nested deeper than {MAX_EXT_DEPTH} levels", claim="ect_ext"
            )
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list | tuple):  # tuples serialise as arrays
                stack.append((child, depth + 1))
    try:
        size = len(compact_json(value))
    except (TypeError, ValueError):
        raise ClaimsInvalid("claim 'ect_ext' is not JSON-serialisable", claim="ect_ext") from None
    if size > MAX_EXT_BYTES:
        raise ExtensionTooLarge(f"'ect_ext' is larger than {MAX_EXT_BYTES} bytes", claim="ect_ext")
    return value


class _CheckedActions(set[str]):
    """Action names already validated: a run uses a handful of actions over and over, so the pattern
    check runs once per name rather than once per call. Bounded; cleared when full."""

    limit = 1024

    def remember(self, action: str) -> None:
        if len(self) >= self.limit:
            self.clear()
        self.add(action)


_checked_actions = _CheckedActions()


def _fast_hash(value: str, name: str) -> str:
    if type(value) is str and HASH_PATTERN.fullmatch(value):
        return value
    return check_hash(value, name)


class ExecutionContextToken:
    """A minted or verified ECT: ``token`` (compact), ``header``, ``claims`` and typed accessors.

    ``signer`` is the key that verified it (``None`` when minted or only decoded). ``repr()`` never
    shows the token.
    """

    __slots__ = ("claims", "header", "signer", "token")

    def __init__(
        self, token: str, header: dict[str, Any], claims: dict[str, Any], signer: PublicKey | None = None
    ) -> None:
        self.token = token
        self.header = header
        self.claims = claims
        self.signer = signer

    # minting (hot path) -----------------------------------------------------------------------------

    @classmethod
    def mint(
        cls,
        agent: Identity,
        *,
        audience: str | Sequence[str],
        exec_act: str,
        pred: Sequence[str],
        wid: str | None = None,
        inp_hash: str | None = None,
        out_hash: str | None = None,
        ect_ext: Mapping[str, Any] | None = None,
        ttl: int = DEFAULT_ECT_TTL,
        now: float | None = None,
        jti: str | None = None,
    ) -> ExecutionContextToken:
        """Sign an ECT as ``agent`` (``iss`` = ``agent.name``). Raises :class:`ClaimsInvalid` (or
        :class:`ExtensionTooLarge`) for values that would make an invalid token."""
        iat = int(time.time() if now is None else now)
        if type(audience) is str and audience:
            aud = [audience]
        else:
            aud = audience_list(audience if isinstance(audience, str) else list(audience))
        preds = check_preds(pred) if isinstance(pred, str) else list(pred)  # a str is no list of ids
        if type(exec_act) is not str or exec_act not in _checked_actions:
            _checked_actions.remember(check_action(exec_act))
        # The common shapes ([] for a root, one predecessor) are cheap to see; the rest gets the full check.
        if preds and not (len(preds) == 1 and type(preds[0]) is str and preds[0]):
            check_preds(preds, max_preds=MAX_PREDS)
        if type(ttl) is not int or ttl <= 0:
            raise ClaimsInvalid("an ECT's ttl must be a positive number of seconds", claim="exp")
        if jti is None:
            jti = new_uuid4()
        elif type(jti) is not str or not UUID_PATTERN.fullmatch(jti):
            check_uuid(jti)
        claims: dict[str, Any] = {
            "iss": agent.name,
            "aud": aud,
            "iat": iat,
            "exp": iat + ttl,
            "jti": jti,
        }
        if wid is not None:
            if type(wid) is not str or not wid:
                raise ClaimsInvalid("claim 'wid' must be a non-empty string", claim="wid")
            claims["wid"] = wid
        claims["exec_act"] = exec_act
        claims["pred"] = preds
        if inp_hash is not None:
            claims["inp_hash"] = _fast_hash(inp_hash, "inp_hash")
        if out_hash is not None:
            claims["out_hash"] = _fast_hash(out_hash, "out_hash")
        if ect_ext is not None:
            claims["ect_ext"] = _check_ext(dict(ect_ext))
        token = jose.encode(agent, jose.ECT_TYP, claims)
        return cls(token, {"alg": agent.alg, "typ": jose.ECT_TYP, "kid": agent.kid}, claims)

    # reading -----------------------------------------------------------------------------------------

    @classmethod
    def _validated(cls, jws: jose.DecodedJWS) -> ExecutionContextToken:
        claims = jws.claims
        require_str(claims, "iss")
        audience_list(claims.get("aud"))
        iat, exp = require_int(claims, "iat"), require_int(claims, "exp")
        if exp <= iat:
            raise ClaimsInvalid("claim 'exp' must be later than 'iat'", claim="exp")
        check_uuid(claims.get("jti"))
        # A server sees the same few actions over and over: validated once (as mint does).
        exec_act = claims.get("exec_act")
        if type(exec_act) is not str or exec_act not in _checked_actions:
            _checked_actions.remember(check_action(exec_act))
        if "pred" not in claims and jws.typ == jose.ECT_TYP_LEGACY and "par" in claims:
            check_preds(claims["par"], name="par", max_preds=MAX_PREDS)
        else:
            preds = claims.get("pred")
            # One predecessor (a call after the previous answer) is the common shape; else in full.
            if not (type(preds) is list and len(preds) == 1 and type(preds[0]) is str and preds[0]):
                check_preds(preds, max_preds=MAX_PREDS)
        optional_str(claims, "wid")
        for name in ("inp_hash", "out_hash"):
            if name in claims:
                check_hash(claims[name], name)
        if "ect_ext" in claims:
            _check_ext(claims["ect_ext"])
        return cls(jws.token, jws.header, claims, jws.key)

    @classmethod
    def decode(cls, token: str) -> ExecutionContextToken:
        """Parse and validate the claims **without** checking the signature, time or replay."""
        jws = jose.decode(token)
        if jws.typ not in ECT_TYPS:
            raise InvalidTokenType(f"the token's typ is not {jose.ECT_TYP}")
        return cls._validated(jws)

    @classmethod
    def verify(
        cls,
        token: str,
        trust: TrustStore,
        *,
        audience: str | Sequence[str] | None = None,
        now: float | None = None,
        skew: float = 60,
        max_age: float | None = DEFAULT_MAX_AGE,
        replay: ReplayStore | None = None,
        verify_time: bool = True,
    ) -> ExecutionContextToken:
        """Verify signature (typ, alg, kid), claims, time (``exp``, ``iat`` within ``skew``, ``iat`` at
        most ``max_age`` old), audience and — given a store — claim the ``jti`` (scoped to ``wid`` and
        the signing key) so it is not accepted again. The claim runs last, so an invalid token never
        occupies the store. A caller with checks of its own after this one passes ``replay=None`` and
        claims :meth:`replay_claim` once those passed too (as the server verifier does)."""
        ect = cls._validated(jose.verify(token, trust, typs=ECT_TYPS))
        iat, exp = ect.iat, ect.exp
        if verify_time:
            check_times(iat, exp, now=now, skew=skew, max_age=max_age)
        check_audience(ect.aud, audience)
        if replay is not None:
            replay.claim([ect.replay_claim(skew=skew, max_age=max_age)], now=now)
        return ect

    def replay_claim(self, *, skew: float = 60, max_age: float | None = DEFAULT_MAX_AGE) -> ReplayClaim:
        """The id to remember for as long as :meth:`verify` (same ``skew`` / ``max_age``) would still
        accept this token, charged to the key that signed it."""
        last = self.exp if max_age is None else min(self.exp, self.iat + max_age)
        partition = key_partition(self.signer) if self.signer is not None else f"kid:{self.header.get('kid')}"
        return ReplayClaim.for_ect(partition, self.jti, self.wid, last + skew)

    # claims ----------------------------------------------------------------------------------------

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def iss(self) -> str:
        return str(self.claims["iss"])

    @property
    def aud(self) -> list[str]:
        value = self.claims["aud"]
        return [value] if isinstance(value, str) else list(value)

    @property
    def iat(self) -> int:
        return int(self.claims["iat"])

    @property
    def exp(self) -> int:
        return int(self.claims["exp"])

    @property
    def wid(self) -> str | None:
        value = self.claims.get("wid")
        return value if isinstance(value, str) else None

    @property
    def exec_act(self) -> str:
        return str(self.claims["exec_act"])

    @property
    def pred(self) -> list[str]:
        """Predecessor ids (``par`` in a legacy -00 token)."""
        value = self.claims.get("pred", self.claims.get("par", []))
        return list(value)

    @property
    def inp_hash(self) -> str | None:
        value = self.claims.get("inp_hash")
        return value if isinstance(value, str) else None

    @property
    def out_hash(self) -> str | None:
        value = self.claims.get("out_hash")
        return value if isinstance(value, str) else None

    @property
    def ect_ext(self) -> dict[str, Any] | None:
        value = self.claims.get("ect_ext")
        return value if isinstance(value, dict) else None

    def __repr__(self) -> str:
        return f"ExecutionContextToken(jti={self.jti!r}, exec_act={self.exec_act!r}, pred={self.pred!r})"
