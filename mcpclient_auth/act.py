"""ACT (draft-nennemann-act): mandates, delegation and execution records.

One token kind (``typ: act+jwt``) in two phases, told apart by their claims:

* **Phase 1, the mandate** — a user (or a delegating agent) authorises an agent (``sub``) to perform
  named capabilities (``cap``) for a task (``task.purpose``) at some audience (``aud``) until ``exp``.
  When the agent is given as a key, ``cnf.jkt`` binds the mandate to that key (RFC 7800).
* **Phase 2, the execution record** — the same ``jti``, re-signed by the agent after the run, with
  ``exec_act``, ``pred``, ``inp_hash``, ``out_hash`` and ``status`` added.

    mandate = Mandate.issue(user, agent=agent, audience="https://mcp.example/mcp",
                            purpose="Answer HR questions", capabilities=["mcp.get_office_locations"])
    Mandate.verify(mandate.token, trust, audience="https://mcp.example/mcp").allows("mcp.search")
    sub = mandate.delegate(agent, agent=helper, capabilities=["mcp.get_office_locations"])
    Mandate.verify(sub.token, trust).chain          # [mandate, sub]: the whole chain is checked
    verify_delegation_chain([mandate.token, sub.token], trust)
    record = ExecutionRecord.issue(agent, mandate, exec_act="mcp.get_office_locations",
                                   pred=[last_ect_jti], out_hash=sha256_b64url(output), status="completed")

Unknown claims (and unknown members of ``task`` and ``cap`` entries) are kept untouched: they appear
in ``claims`` after decoding and are carried into records and sub-mandates.

**Who may sign what** (the trust model): :meth:`Mandate.verify` needs a :class:`TrustStore` with
roles. A top-level mandate verifies only when its signing key is registered as an issuer for its
``iss`` (an agent key never signs one). A delegated mandate carries its parent's compact token in
``del.parent`` — an extension of the draft's ``del`` claim, because a server or a ledger sees only the
leaf mandate — so verifying the leaf verifies the whole chain: each link signed by the parent's bound
agent key (a registered agent), ``iss`` = parent ``sub``, capabilities, constraints and audience equal
or narrower, ``exp`` within the parent's, depth within the store's and the root's bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from . import jose
from ._claims import (
    audience_list,
    check_action,
    check_audience,
    check_hash,
    check_preds,
    check_times,
    check_uuid,
    new_uuid4,
    now_seconds,
    optional_str,
    require_int,
    require_object,
    require_str,
)
from ._encoding import sha256_b64url
from .errors import (
    CapabilityNotGranted,
    ClaimsInvalid,
    DelegationError,
    InvalidTokenType,
    IssuerNotAuthorized,
    KeyBindingMismatch,
    PhaseError,
    PrivilegeEscalation,
    TokenNotYetValid,
)
from .keys import Identity, PublicKey, TrustStore

__all__ = [
    "DEFAULT_MANDATE_TTL",
    "DEFAULT_MAX_DEPTH",
    "RECORD_STATUSES",
    "ExecutionRecord",
    "Mandate",
    "verify_delegation_chain",
]

DEFAULT_MANDATE_TTL = 900
#: Default bound on delegation hops when verifying a chain (the root mandate is depth 0).
DEFAULT_MAX_DEPTH = 4
RECORD_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: Error code of a delegation whose links do not fit together (depth, chain, issuer, parent token).
_CHAIN_BROKEN = "delegation_chain_broken"
#: Bound of a ``verified_parents`` memo (:meth:`Mandate.verify`): cleared when full.
_MAX_VERIFIED_PARENTS = 1024

#: Claims whose presence makes an ACT a phase-2 execution record.
_PHASE2_MARKERS = ("exec_act", "status")
_PHASE2_CLAIMS = frozenset({"exec_act", "status", "inp_hash", "out_hash"})
#: Claims the SDK computes when it issues a mandate; ``**extra`` may not set them.
_COMPUTED = frozenset({"iss", "sub", "aud", "iat", "exp", "jti", "task", "cap", "cnf", "del"})

Capability = str | Mapping[str, Any]
Agent = Identity | PublicKey | str


# --- claim helpers -------------------------------------------------------------------------------


def _normalize_caps(capabilities: Capability | Sequence[Capability]) -> list[dict[str, Any]]:
    """``["mcp.a", {"action": "mcp.b", "constraints": {...}}]`` -> a valid ``cap`` array."""
    items: Sequence[Capability] = [capabilities] if isinstance(capabilities, str | Mapping) else capabilities
    return _parse_caps([{"action": c} if isinstance(c, str) else dict(c) for c in items])


def _parse_caps(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ClaimsInvalid("claim 'cap' must be a list of capabilities", claim="cap")
    seen: set[str] = set()
    for entry in value:
        if not isinstance(entry, dict):
            raise ClaimsInvalid("each 'cap' entry must be an object with an 'action'", claim="cap")
        action = check_action(entry.get("action"), "cap.action")
        if "constraints" in entry and not isinstance(entry["constraints"], dict):
            raise ClaimsInvalid("'cap' constraints must be a JSON object", claim="cap")
        if action in seen:
            raise ClaimsInvalid(f"capability {action!r} is listed twice", claim="cap")
        seen.add(action)
    return value


def _parse_delegation(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClaimsInvalid("claim 'del' must be a JSON object", claim="del")
    depth, chain = value.get("depth"), value.get("chain")
    if type(depth) is not int or depth < 0:
        raise ClaimsInvalid("'del.depth' must be a non-negative integer", claim="del")
    if not isinstance(chain, list) or len(chain) != depth:
        raise ClaimsInvalid("'del.chain' must list one entry per delegation hop", claim="del")
    for link in chain:
        if not isinstance(link, dict) or not all(isinstance(link.get(k), str) for k in ("jti", "iss", "sub")):
            raise ClaimsInvalid("each 'del.chain' entry needs 'jti', 'iss' and 'sub'", claim="del")
    if "max_depth" in value and (type(value["max_depth"]) is not int or value["max_depth"] < 0):
        raise ClaimsInvalid("'del.max_depth' must be a non-negative integer", claim="del")
    if "parent" in value:
        if depth == 0:
            raise ClaimsInvalid("a mandate that is not delegated carries no 'del.parent'", claim="del")
        if not isinstance(value["parent"], str) or not value["parent"]:
            raise ClaimsInvalid("'del.parent' must be the parent mandate's compact token", claim="del")
    return value


def _constraints_narrower(parent: Mapping[str, Any] | None, child: Mapping[str, Any] | None) -> bool:
    """Whether a delegated capability's constraints are equal to or narrower than its parent's:
    :func:`mcpclient_auth.constraints.is_narrower` (every parent constraint kept, each equal or
    narrower by its evaluator; the child may add known constraints; anything unknown is a widening)."""
    from .constraints import is_narrower  # constraints -> policy -> jsonrpc: no cycle, kept local anyway

    return is_narrower(parent, child)


def _shown(value: str, limit: int = 64) -> str:
    """A claim value for an error message, bounded (claims come from untrusted tokens)."""
    return value if len(value) <= limit else value[:limit] + "…"


def _sub_for(agent: Agent) -> tuple[str, str | None]:
    """``(sub, cnf.jkt)`` for an agent given as a key (bound) or as a bare name (unbound)."""
    if isinstance(agent, Identity):
        return agent.name, agent.public.thumbprint
    if isinstance(agent, PublicKey):
        return agent.name or agent.kid, agent.thumbprint
    if isinstance(agent, str) and agent:
        return agent, None
    raise ClaimsInvalid("the agent must be an Identity, a PublicKey or a non-empty name", claim="sub")


def _issued_at(now: float | None) -> int:
    return int(now_seconds(now))


def _new_jti(jti: str | None) -> str:
    return new_uuid4() if jti is None else check_uuid(jti)


# --- the shared ACT view ---------------------------------------------------------------------------


class _ActToken:
    """Validated view of an ``act+jwt`` token; subclasses fix the phase."""

    __slots__ = ("_actions", "aud", "claims", "header", "signer", "task", "token")

    #: True for execution records (phase 2), False for mandates (phase 1).
    _phase2: ClassVar[bool]
    _kind: ClassVar[str]

    def __init__(
        self, token: str, header: dict[str, Any], claims: dict[str, Any], signer: PublicKey | None = None
    ) -> None:
        if any(marker in claims for marker in _PHASE2_MARKERS) != self._phase2:
            actual = "an execution record" if not self._phase2 else "a mandate"
            raise PhaseError(f"expected {self._kind}, got {actual}")
        self.token = token
        self.header = header
        self.claims = claims
        #: The key that verified the token (``None`` when only decoded or just issued).
        self.signer = signer
        require_str(claims, "iss")
        require_str(claims, "sub")
        self.aud: list[str] = audience_list(claims.get("aud"))
        require_int(claims, "iat")
        require_int(claims, "exp")
        check_uuid(claims.get("jti"))
        self.task = require_object(claims, "task")
        if not isinstance(self.task.get("purpose"), str) or not self.task["purpose"]:
            raise ClaimsInvalid("'task.purpose' must be a non-empty string", claim="task")
        self._actions = {entry["action"]: entry for entry in _parse_caps(claims.get("cap"))}
        optional_str(claims, "wid")
        if "cnf" in claims:
            cnf = require_object(claims, "cnf")
            if "jkt" in cnf and (not isinstance(cnf["jkt"], str) or not cnf["jkt"]):
                raise ClaimsInvalid("'cnf.jkt' must be a key thumbprint", claim="cnf")
        if "del" in claims:
            _parse_delegation(claims["del"])

    @classmethod
    def _decode(cls, token: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        jws = jose.decode(token)
        if jws.typ != jose.ACT_TYP:
            raise InvalidTokenType(f"the token's typ is not {jose.ACT_TYP}")
        return token, jws.header, jws.claims

    # claims -------------------------------------------------------------------------------------

    @classmethod
    def _sign(cls, signer: Identity, claims: dict[str, Any]) -> Self:
        # Validate before signing, so issue() can never hand out a token that verify() refuses.
        unsigned = cls("", {}, claims)
        try:
            token = jose.encode(signer, jose.ACT_TYP, claims)
        except (TypeError, ValueError):
            raise ClaimsInvalid("the token's claims are not JSON-serialisable") from None
        unsigned.token = token
        unsigned.header = {"alg": signer.alg, "typ": jose.ACT_TYP, "kid": signer.kid}
        return unsigned

    @classmethod
    def decode(cls, token: str) -> Self:
        """Parse and validate the claims **without** checking the signature or the time."""
        return cls(*cls._decode(token))

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def iss(self) -> str:
        return str(self.claims["iss"])

    @property
    def sub(self) -> str:
        return str(self.claims["sub"])

    @property
    def iat(self) -> int:
        return int(self.claims["iat"])

    @property
    def exp(self) -> int:
        return int(self.claims["exp"])

    @property
    def purpose(self) -> str:
        return str(self.task["purpose"])

    @property
    def cap(self) -> list[dict[str, Any]]:
        """The ``cap`` array as issued (with constraints and unknown members)."""
        return list(self._actions.values())

    @property
    def capabilities(self) -> list[str]:
        """The granted action names, in issue order."""
        return list(self._actions)

    @property
    def wid(self) -> str | None:
        value = self.claims.get("wid")
        return value if isinstance(value, str) else None

    @property
    def agent_kid(self) -> str | None:
        """``cnf.jkt``: the RFC 7638 thumbprint of the agent key this mandate binds, if any."""
        cnf = self.claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        return jkt if isinstance(jkt, str) else None

    @property
    def delegation(self) -> dict[str, Any] | None:
        """The ``del`` claim: ``{"depth", "chain": [{"jti", "iss", "sub"}, ...], "max_depth"?}``."""
        value = self.claims.get("del")
        return value if isinstance(value, dict) else None

    @property
    def depth(self) -> int:
        """Delegation depth: 0 for a mandate issued by the user, +1 per hop."""
        return int(self.delegation["depth"]) if self.delegation else 0

    @property
    def max_depth(self) -> int | None:
        """A delegation bound the issuer put into ``del.max_depth``, if any."""
        value = self.delegation.get("max_depth") if self.delegation else None
        return value if isinstance(value, int) else None

    def allows(self, action: str) -> bool:
        """Whether ``action`` (e.g. ``mcp.search``) is one of the granted capabilities."""
        return action in self._actions

    def constraints(self, action: str) -> dict[str, Any] | None:
        """The ``constraints`` object of a granted capability (``None`` if unconstrained or not granted)."""
        entry = self._actions.get(action)
        value = entry.get("constraints") if entry else None
        return value if isinstance(value, dict) else None

    def binds(self, key: Identity | PublicKey) -> bool:
        """True when ``cnf.jkt`` names exactly this key."""
        public = key.public if isinstance(key, Identity) else key
        return self.agent_kid is not None and public.thumbprint == self.agent_kid

    def _check_holder(self, key: Identity | PublicKey, error: type[Exception]) -> None:
        """``key`` must be the agent's: the bound key when ``cnf.jkt`` is set, else a key named ``sub``."""
        if self.agent_kid is not None:
            if not self.binds(key):
                raise error(f"the key is not the agent key this {self._kind} binds (cnf.jkt)")
        elif key.name != self.sub:
            raise error(f"the key's name is not this {self._kind}'s subject")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(jti={self.jti!r}, iss={self.iss!r}, sub={self.sub!r}, "
            f"capabilities={self.capabilities!r})"
        )


# --- phase 1: mandates -------------------------------------------------------------------------------


class Mandate(_ActToken):
    """A phase-1 ACT: who may do what, for which task, for whom, until when. See the module docs."""

    __slots__ = ("_parent",)
    _phase2 = False
    _kind = "mandate"

    def __init__(
        self, token: str, header: dict[str, Any], claims: dict[str, Any], signer: PublicKey | None = None
    ) -> None:
        super().__init__(token, header, claims, signer)
        #: The verified parent of a delegated mandate (set by verify() and delegate()).
        self._parent: Mandate | None = None
        if self.exp <= self.iat:
            raise ClaimsInvalid("claim 'exp' must be later than 'iat'", claim="exp")
        if "pred" in claims:
            check_preds(claims["pred"])

    @classmethod
    def issue(
        cls,
        issuer: Identity,
        *,
        agent: Agent,
        audience: str | Sequence[str],
        purpose: str,
        capabilities: Capability | Sequence[Capability],
        ttl: int = DEFAULT_MANDATE_TTL,
        now: float | None = None,
        jti: str | None = None,
        wid: str | None = None,
        task: Mapping[str, Any] | None = None,
        max_delegation_depth: int | None = None,
        iss: str | None = None,
        **extra: Any,
    ) -> Mandate:
        """Sign a mandate as ``issuer`` (``iss`` = ``issuer.name``, or ``iss=``) for ``agent``.

            Mandate.issue(user, agent=agent, audience="https://mcp.example/mcp", purpose="...",
                          capabilities=["mcp.search", {"action": "mcp.fetch", "constraints": {...}}])

        ``agent``: an :class:`Identity` or :class:`PublicKey` (``sub`` = its name, ``cnf.jkt`` = its
        thumbprint, binding the agent key) or a plain name (``sub`` only, no key binding).
        ``task`` adds members next to ``purpose``; ``max_delegation_depth`` limits later delegation
        (``del.max_depth``); ``**extra`` adds further claims (``oversight``, ``pred``, ...).
        ``iss`` is for a mandate service signing for a principal it is registered for
        (``TrustStore.add_issuer(service, principals=[...])``); a verifier refuses any other pairing.
        """
        sub, jkt = _sub_for(agent)
        if iss is not None and (not isinstance(iss, str) or not iss):
            raise ClaimsInvalid("iss= must be a non-empty principal name", claim="iss")
        if type(ttl) is not int or ttl <= 0:
            raise ClaimsInvalid("a mandate's ttl must be a positive number of seconds", claim="exp")
        clash = (_COMPUTED | _PHASE2_CLAIMS).intersection(extra)
        if clash:
            raise ClaimsInvalid(f"claims {sorted(clash)} cannot be set as extras", claim=sorted(clash)[0])
        aud = audience_list(audience if isinstance(audience, str) else list(audience))
        iat = _issued_at(now)
        claims: dict[str, Any] = {
            "iss": issuer.name if iss is None else iss,
            "sub": sub,
            "aud": aud[0] if len(aud) == 1 else aud,
            "iat": iat,
            "exp": iat + ttl,
            "jti": _new_jti(jti),
            "task": {"purpose": purpose, **{k: v for k, v in (task or {}).items() if k != "purpose"}},
            "cap": _normalize_caps(capabilities),
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        if wid is not None:
            claims["wid"] = wid
        if max_delegation_depth is not None:
            claims["del"] = {"depth": 0, "chain": [], "max_depth": max_delegation_depth}
        claims.update(extra)
        return cls._sign(issuer, claims)

    @classmethod
    def verify(
        cls,
        token: str,
        trust: TrustStore,
        *,
        audience: str | Sequence[str] | None = None,
        now: float | None = None,
        skew: float = 60,
        verify_time: bool = True,
        verified_parents: dict[str, Mandate] | None = None,
    ) -> Mandate:
        """Verify a mandate — signature, phase, claims, time, audience (when given) — and who signed it.

        ``trust`` must have roles (:class:`TrustRolesMissing` otherwise). A top-level mandate must be
        signed by a key registered as issuer for its ``iss`` (:class:`IssuerNotAuthorized`). A
        delegated one must carry its ancestry in ``del.parent``; every link is verified back to a
        top-level mandate (:class:`DelegationError`, :class:`PrivilegeEscalation`), and
        :attr:`chain` then lists the verified mandates, root first.

        ``verified_parents`` (only with ``verify_time=False``, e.g. an offline ledger verifier, which
        keeps one for a whole pass over one ``trust`` and ``skew``): ancestors already verified, by
        their exact token text. An ancestor whose token is in it is not verified again (its link to
        the child still is); every ancestor verified here is added. A different token — even one with
        the same ``jti`` — is verified in full. Only successes are stored.
        """
        trust.require_roles()
        if verify_time:
            verified_parents = None  # time checks depend on the clock: nothing to reuse
        mandate = cls._verify_link(
            token,
            trust,
            now=now,
            skew=skew,
            verify_time=verify_time,
            expected_depth=None,
            verified=verified_parents,
        )
        check_audience(mandate.aud, audience)
        return mandate

    @classmethod
    def _verify_link(
        cls,
        token: str,
        trust: TrustStore,
        *,
        now: float | None,
        skew: float,
        verify_time: bool,
        expected_depth: int | None,
        verified: dict[str, Mandate] | None = None,
    ) -> Mandate:
        jws = jose.verify(token, trust, typs=(jose.ACT_TYP,))
        mandate = cls(token, jws.header, jws.claims, jws.key)
        signer = jws.key
        assert signer is not None  # set by jose.verify
        depth = mandate.depth
        if expected_depth is not None and depth != expected_depth:
            raise DelegationError(
                "a sub-mandate's delegation depth does not follow its parent's",
                code=_CHAIN_BROKEN,
            )
        # Bound the recursion before following del.parent: the depth only shrinks from here.
        if depth > trust.max_delegation_depth:
            raise DelegationError(
                f"the mandate is delegated {depth} times; this verifier allows {trust.max_delegation_depth}",
                code="delegation_too_deep",
            )
        if mandate.max_depth is not None and depth > mandate.max_depth:
            raise DelegationError(
                f"the root mandate allows at most {mandate.max_depth} delegations", code="delegation_too_deep"
            )
        if verify_time:
            check_times(mandate.iat, mandate.exp, now=now, skew=skew)
        if depth == 0:
            _check_issuer(mandate, signer, trust)
            return mandate
        parent_token = (mandate.delegation or {}).get("parent")
        if not isinstance(parent_token, str):
            raise DelegationError(
                "a delegated mandate must carry its parent mandate (del.parent)",
                code=_CHAIN_BROKEN,
            )
        parent = verified.get(parent_token) if verified is not None else None
        if parent is None or parent.depth != depth - 1:
            parent = cls._verify_link(
                parent_token,
                trust,
                now=now,
                skew=skew,
                verify_time=verify_time,
                expected_depth=depth - 1,
                verified=verified,
            )
            if verified is not None:
                if len(verified) >= _MAX_VERIFIED_PARENTS:
                    verified.clear()  # bounded: a ledger of many distinct parents re-verifies some
                verified[parent_token] = parent
        _check_link(parent, mandate, trust, skew=skew)
        mandate._parent = parent
        return mandate

    @property
    def principal(self) -> str:
        """On whose behalf the agent acts: ``iss`` of the chain's root (a sub-mandate's own ``iss`` is
        the delegating agent). Read from ``del.chain``, which verification ties to the real ancestry."""
        chain = (self.delegation or {}).get("chain") or []
        return str(chain[0]["iss"]) if chain else self.iss

    @property
    def parent(self) -> Mandate | None:
        """The parent of a delegated mandate, once verified (or delegated here); else ``None``."""
        return self._parent

    @property
    def chain(self) -> list[Mandate]:
        """The verified delegation chain, root (a user's mandate) first and this mandate last."""
        chain: list[Mandate] = [self]
        while chain[-1]._parent is not None:
            chain.append(chain[-1]._parent)
        return chain[::-1]

    def delegate(
        self,
        holder: Identity,
        *,
        agent: Agent,
        capabilities: Capability | Sequence[Capability],
        ttl: int | None = None,
        purpose: str | None = None,
        audience: str | Sequence[str] | None = None,
        now: float | None = None,
        jti: str | None = None,
    ) -> Mandate:
        """A sub-mandate issued by the current holder (this mandate's agent) to ``agent``.

            sub = mandate.delegate(agent, agent=helper, capabilities=["mcp.search"], ttl=300)

        ``iss`` = this mandate's ``sub``; ``del`` records the chain and carries this mandate's token
        (``del.parent``, so a verifier that sees only the sub-mandate can check the whole chain);
        ``cap`` and ``aud`` must be subsets of this mandate's (:class:`PrivilegeEscalation` otherwise);
        ``exp`` is clamped to this mandate's. A constrained capability keeps its constraints and may
        add more, never drop or change one. Other claims (``task`` members, ``wid``, ``oversight``,
        unknown ones) are inherited. Only a mandate that binds its agent key (``cnf.jkt``) can be
        delegated, by that key.
        """
        if self.agent_kid is None:
            raise DelegationError(
                "only a mandate that binds its agent key (cnf.jkt) can be delegated",
                code="delegation_unbound_parent",
            )
        if not self.token:
            raise DelegationError("the mandate has no token to carry as the sub-mandate's parent")
        self._check_holder(holder, DelegationError)
        if self.max_depth is not None and self.depth + 1 > self.max_depth:
            raise DelegationError(f"this mandate may be delegated at most {self.max_depth} times")
        caps = _normalize_caps(capabilities)
        for entry in caps:
            parent = self._actions.get(entry["action"])
            if parent is None:
                raise PrivilegeEscalation(
                    f"cannot delegate {entry['action']!r}: the mandate does not grant it",
                    action=entry["action"],
                )
            if "constraints" in parent:
                if "constraints" not in entry:
                    entry["constraints"] = parent["constraints"]
                elif not _constraints_narrower(parent["constraints"], entry["constraints"]):
                    raise PrivilegeEscalation(
                        f"cannot drop or change the constraints of {entry['action']!r} when delegating",
                        action=entry["action"],
                    )
        if audience is None:
            aud = self.aud
        else:
            aud = audience_list(audience if isinstance(audience, str) else list(audience))
            if not set(aud) <= set(self.aud):
                raise PrivilegeEscalation("cannot delegate to an audience the mandate does not name")
        iat = _issued_at(now)
        exp = self.exp if ttl is None else min(iat + ttl, self.exp)
        if exp <= iat:
            raise DelegationError("the mandate has expired; it cannot be delegated")
        sub, jkt = _sub_for(agent)
        link = {"jti": self.jti, "iss": self.iss, "sub": self.sub}
        delegation: dict[str, Any] = {
            "depth": self.depth + 1,
            "chain": [*(self.delegation or {}).get("chain", []), link],
            "parent": self.token,
        }
        if self.max_depth is not None:
            delegation["max_depth"] = self.max_depth
        claims: dict[str, Any] = {
            "iss": self.sub,
            "sub": sub,
            "aud": aud[0] if len(aud) == 1 else aud,
            "iat": iat,
            "exp": exp,
            "jti": _new_jti(jti),
            "task": {**self.task, "purpose": purpose if purpose is not None else self.purpose},
            "cap": caps,
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        claims["del"] = delegation
        # Inherit everything else (wid, oversight, unknown members); a sub-mandate is no DAG node of
        # its parent's, so the parent's pred is not copied.
        for name, value in self.claims.items():
            if name not in _COMPUTED and name != "pred":
                claims[name] = value
        child = self._sign(holder, claims)
        child._parent = self
        return child


def _check_issuer(mandate: Mandate, signer: PublicKey, trust: TrustStore) -> None:
    """A top-level mandate: the signer must be registered as issuer for its ``iss``, never an agent."""
    if trust.is_agent(signer.kid):
        raise IssuerNotAuthorized(
            "the mandate is signed by an agent key; an agent may only delegate a mandate it holds",
            code="agent_key_not_issuer",
        )
    if not trust.may_issue(signer.kid, mandate.iss):
        raise IssuerNotAuthorized(
            f"the mandate's signing key is not registered as an issuer for iss {_shown(mandate.iss)!r}"
        )


def _check_link(parent: Mandate, child: Mandate, trust: TrustStore, *, skew: float) -> None:
    """One delegation link; ``parent`` is already verified."""
    if parent.agent_kid is None:
        raise DelegationError(
            "the parent mandate binds no agent key (cnf.jkt), so nobody may delegate it",
            code="delegation_unbound_parent",
        )
    if child.signer is None or not parent.binds(child.signer):
        raise DelegationError(
            "a sub-mandate is not signed by the agent key its parent binds", code="delegation_signer_mismatch"
        )
    if not trust.is_agent(child.signer.kid):
        raise DelegationError(
            "a sub-mandate is signed by a key that is not a registered agent key",
            code="delegation_signer_mismatch",
        )
    if child.iss != parent.sub:
        raise DelegationError("a sub-mandate's issuer is not its parent's subject", code=_CHAIN_BROKEN)
    expected_chain = [
        *(parent.delegation or {}).get("chain", []),
        {"jti": parent.jti, "iss": parent.iss, "sub": parent.sub},
    ]
    delegation = child.delegation
    if delegation is None or delegation["depth"] != parent.depth + 1:
        raise DelegationError(
            "a sub-mandate's delegation depth does not follow its parent's", code=_CHAIN_BROKEN
        )
    if [{k: link.get(k) for k in ("jti", "iss", "sub")} for link in delegation["chain"]] != expected_chain:
        raise DelegationError("a sub-mandate's delegation chain does not name its parent", code=_CHAIN_BROKEN)
    if parent.max_depth is not None and child.max_depth != parent.max_depth:
        raise DelegationError(
            "a sub-mandate dropped or changed its parent's delegation bound", code=_CHAIN_BROKEN
        )
    for entry in child.cap:
        granted = parent._actions.get(entry["action"])
        if granted is None:
            raise PrivilegeEscalation(
                f"a sub-mandate grants {entry['action']!r}, which its parent does not",
                action=entry["action"],
            )
        if not _constraints_narrower(granted.get("constraints"), entry.get("constraints")):
            raise PrivilegeEscalation(
                f"a sub-mandate drops or changes the constraints of {entry['action']!r}",
                action=entry["action"],
            )
    if not set(child.aud) <= set(parent.aud):
        raise PrivilegeEscalation("a sub-mandate names an audience its parent does not")
    if child.exp > parent.exp:
        raise DelegationError("a sub-mandate expires after its parent", code="delegation_outlives_parent")
    if child.iat + skew < parent.iat:
        raise DelegationError("a sub-mandate was issued before its parent", code=_CHAIN_BROKEN)


def verify_delegation_chain(
    tokens: Sequence[str],
    trust: TrustStore,
    *,
    audience: str | Sequence[str] | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    now: float | None = None,
    skew: float = 60,
    verify_time: bool = True,
) -> list[Mandate]:
    """Verify a delegation chain, root (the user's mandate) first, and return the mandates.

        root, sub = verify_delegation_chain([mandate.token, sub.token], trust, audience=server)

    A thin wrapper over :meth:`Mandate.verify` of the last token (which verifies the ancestry it
    carries in ``del.parent``): the tokens given must be exactly that ancestry, and the chain no
    deeper than ``max_depth`` (besides the trust store's and the root's bounds). ``audience`` is
    checked on the last mandate.
    """
    if isinstance(tokens, str) or not tokens:
        raise DelegationError("a delegation chain is a non-empty list of mandates")
    if len(tokens) - 1 > max_depth:
        raise DelegationError(f"the delegation chain is deeper than {max_depth}", code="delegation_too_deep")
    leaf = Mandate.verify(tokens[-1], trust, audience=audience, now=now, skew=skew, verify_time=verify_time)
    chain = leaf.chain
    if [mandate.token for mandate in chain] != list(tokens):
        raise DelegationError(
            "the tokens given are not the last mandate's own delegation chain", code=_CHAIN_BROKEN
        )
    return chain


# --- phase 2: execution records ------------------------------------------------------------------------


class ExecutionRecord(_ActToken):
    """A phase-2 ACT: the mandate's claims, re-signed by the agent with what the run did.

    A record is evidence, not authority: its ``exp`` (inherited from the mandate) is not enforced, so
    a run that ends after its mandate expired still gets a verifiable record. ``iat`` is when it was
    signed and must not lie in the future.
    """

    __slots__ = ()
    _phase2 = True
    _kind = "execution record"

    def __init__(
        self, token: str, header: dict[str, Any], claims: dict[str, Any], signer: PublicKey | None = None
    ) -> None:
        super().__init__(token, header, claims, signer)
        status = claims.get("status")
        if status not in RECORD_STATUSES:
            raise ClaimsInvalid(f"'status' must be one of {sorted(RECORD_STATUSES)}", claim="status")
        if "exec_act" in claims:
            action = check_action(claims["exec_act"])
            if action not in self._actions:
                raise CapabilityNotGranted(
                    f"the record's exec_act {action!r} is not among the mandate's capabilities",
                    action=action,
                )
        check_preds(claims.get("pred"))
        inp_hash = check_hash(claims.get("inp_hash"), "inp_hash")
        check_hash(claims.get("out_hash"), "out_hash")
        if inp_hash != sha256_b64url(self.purpose.encode("utf-8")):
            raise ClaimsInvalid("'inp_hash' is not the hash of the task purpose", claim="inp_hash")

    @property
    def exec_act(self) -> str | None:
        value = self.claims.get("exec_act")
        return value if isinstance(value, str) else None

    @property
    def pred(self) -> list[str]:
        return list(self.claims["pred"])

    @property
    def inp_hash(self) -> str:
        return str(self.claims["inp_hash"])

    @property
    def out_hash(self) -> str:
        return str(self.claims["out_hash"])

    @property
    def status(self) -> str:
        return str(self.claims["status"])

    @classmethod
    def issue(
        cls,
        agent: Identity,
        mandate: Mandate,
        *,
        exec_act: str | None,
        pred: Sequence[str],
        out_hash: str,
        status: str,
        now: float | None = None,
    ) -> ExecutionRecord:
        """Sign the record of a finished run as the mandate's agent.

            ExecutionRecord.issue(agent, mandate, exec_act="mcp.search", pred=frontier,
                                  out_hash=sha256_b64url(output.encode()), status="completed")

        ``exec_act`` is the run's last tool action (``None`` when no tool was called) and must be
        granted (:class:`CapabilityNotGranted`); ``inp_hash`` is computed from the task purpose.
        """
        mandate._check_holder(agent, KeyBindingMismatch)
        if exec_act is not None and not mandate.allows(check_action(exec_act)):
            raise CapabilityNotGranted(
                f"exec_act {exec_act!r} is not among the mandate's capabilities", action=exec_act
            )
        claims = {name: value for name, value in mandate.claims.items() if name not in _PHASE2_CLAIMS}
        claims["iat"] = _issued_at(now)
        if exec_act is not None:
            claims["exec_act"] = exec_act
        claims["pred"] = check_preds(pred if isinstance(pred, str) else list(pred))
        claims["inp_hash"] = sha256_b64url(mandate.purpose.encode("utf-8"))
        claims["out_hash"] = out_hash
        claims["status"] = status
        return cls._sign(agent, claims)

    @classmethod
    def verify(
        cls,
        token: str,
        trust: TrustStore,
        *,
        mandate: Mandate | None = None,
        now: float | None = None,
        skew: float = 60,
        verify_time: bool = True,
    ) -> ExecutionRecord:
        """Verify a record: signature, phase, claims, the agent key binding and, given the mandate,
        that the record repeats the mandate's claims (same ``jti``, same ``cap``, ...).

        The signer must be a registered agent key of ``trust`` (which needs roles): the key ``cnf.jkt``
        names or, for a mandate without ``cnf``, one whose ``name`` is the mandate's ``sub``
        (:class:`KeyBindingMismatch` otherwise).
        """
        trust.require_roles()
        jws = jose.verify(token, trust, typs=(jose.ACT_TYP,))
        record = cls(token, jws.header, jws.claims, jws.key)
        assert jws.key is not None  # set by jose.verify
        record._check_holder(jws.key, KeyBindingMismatch)
        if not trust.is_agent(jws.key.kid):
            raise KeyBindingMismatch(
                "the record is not signed by a registered agent key", code="signer_not_agent"
            )
        if record.agent_kid is None:
            named = trust.agent_named(record.sub)  # name-only: the one agent key with that name
            if named is None or named.thumbprint != jws.key.thumbprint:
                raise KeyBindingMismatch("the record is not signed by the one agent key named as its subject")
        if verify_time and record.iat > now_seconds(now) + skew:
            raise TokenNotYetValid("the record was issued in the future ('iat' beyond the clock skew)")
        if mandate is not None:
            if record.jti != mandate.jti:
                raise ClaimsInvalid("the record's jti is not its mandate's", claim="jti")
            for name, value in mandate.claims.items():
                if name != "iat" and record.claims.get(name) != value:
                    raise ClaimsInvalid(f"the record does not repeat its mandate's {name!r}", claim=name)
        return record
