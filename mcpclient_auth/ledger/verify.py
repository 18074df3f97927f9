"""Offline ledger verification (DESIGN §6): every line, every token, every run.

    report = verify_ledger("ledger.jsonl", TrustStore.from_jwks("jwks.json"))
    report.ok                      # True only when every check holds
    for failure in report.failures:
        print(failure.seq, failure.check, failure.reason)
    report.runs["<run id>"].verified
    json.dumps(report.to_dict())

Each failure names the check that caught it (:data:`CHECKS`). One streaming pass reads the file:

- **lines** — each line parses (``line_malformed``); ``seq`` counts up by one (``seq_gap``); ``prev`` is
  the hash of the previous line's bytes (``chain_broken``); a last line without newline is a
  ``torn_tail`` (reported as such; the complete lines before it are judged on their own). A torn or
  unreadable line immediately followed by the writer's recovery record (``ledger_recovered``, whose
  ``torn_hash``/``torn_bytes`` are that line's) is a reported recovery, not a failure — if the record
  says nothing else, the torn bytes begin like the ledger's next line, and its signature (when it
  has one) covers exactly those facts (``recovery_invalid`` otherwise).
  A line the recovery closes is torn bytes even when it parses (a complete-looking line written
  without its newline, :func:`~.reader.closing_recoveries`): never routed, shown or counted as an entry.
- **the tail** — a seal or a server ``checkpoint`` signs the hash of the line before it, and through
  the chain every line before that: what follows the *last* one is vouched for by nobody. Anything
  there other than a torn line closed by a *signed* recovery fails ``unsealed_tail`` (and a torn
  last line ``torn_tail``) unless ``allow_unsealed_tail``; :attr:`Report.exit_code` is then 3, not
  1. Runs still open in that tail are not also ``run_unsealed``. Checkpoints are verified here
  (``checkpoint_invalid``: signature, type, a key with no issuer/agent role; ``checkpoint_mismatch``:
  ``seq``/``ts``/``last`` must be the line's own).
- **anchors** — given the points an :class:`~.anchor.Anchor` recorded, each anchored line must be
  in the file with that hash (``anchor_mismatch``) and the file must not end before the last one
  (``anchor_missing``): runs cut from the end are found.
- **tokens** — mandates, ECTs, records and seals are verified against the trust store (typ, alg
  allowlist, kid, signature, claims; ``token_invalid`` / ``unknown_key`` / ``record_invalid`` /
  ``seal_invalid``) with ``verify_time=False``: they are checked long after they expired, so their
  times are checked against the entry's ``ts`` instead (``token_time``).
- **who signed** — the trust store must have roles (:class:`TrustRolesMissing` otherwise). A run's
  mandate must be signed by an issuer registered for its ``iss`` (``issuer_not_authorized``) or be a
  valid delegation whose ancestry it carries (``delegation_invalid``); every ECT, record and seal must
  be signed by a registered agent key (``signer_not_agent``) — the one ``cnf.jkt`` binds, or for a
  mandate that binds none, one whose name is the mandate's ``sub`` (``ect_issuer_mismatch``,
  ``seal_invalid``, ``record_invalid``).
- **runs** — the run starts with its mandate (``mandate_missing``); ids are unique (``duplicate_jti``);
  every ``pred`` is an earlier mandate or ECT of the same run (``pred_unknown``), not newer than its
  child beyond the skew (``pred_newer``), and the DAG is acyclic (``dag_cycle``); every call's
  ``exec_act`` is in the mandate's ``cap`` unless it is protocol plumbing
  (``cap_violation``; :data:`~mcpclient_auth.policy.PLUMBING_ACTIONS`); the mandate's constraints are
  all understood (``constraint_unknown``) and no action was called more often than its ``max_calls``
  (``constraint_violation``; argument constraints need the bodies, which the ledger does not hold);
  the ECT issuer is the mandate's agent, and its key the bound one when the mandate has
  ``cnf.jkt`` (``ect_issuer_mismatch``); the record keeps the mandate ``jti``
  (``record_jti_mismatch``); the seal's ``count`` and ``last`` match the file and its line's meta
  and ``ts`` match what it signs (``seal_mismatch``, ``token_time``);
  nothing follows the seal (``entry_after_seal``); every run is sealed (``run_unsealed``, unless
  ``allow_unsealed``); every tool call of a sealed run got an answer (``response_missing``): a
  ``response`` entry for its ECT that is not marked ``code: "response_missing"`` (the stream ended
  without the JSON-RPC response) nor ``code: "answer_id_mismatch"`` (the first JSON-RPC response on
  the call's stream — which the MCP client takes as the end of it — carried another id: the client
  never got this call's answer, or got another message as it). An ``error`` entry instead
  (transport failure, ``incomplete`` at the run's close) is an unanswered call too. Runs that are
  still open (unsealed) are not judged here: their calls may still be in flight.

Memory is per run (the run's node ids and their ``iat``), released when the run's seal is read.
With ``jobs > 1`` the line pass (parse, ``seq``, chain, seals' place in the file) still runs once,
in this process; each run, once its seal is read, goes whole to one of ``jobs`` worker processes,
which does the run's token verifications — the expensive part — and its DAG checks. Workers get
the trust store as a JWKS and at most ``2 * jobs`` batches are in flight, so memory stays bounded.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import jose
from .._encoding import b64url_decode, strict_json_loads
from ..act import ExecutionRecord, Mandate
from ..constraints import check_known
from ..dag import check_dag
from ..ect import ExecutionContextToken
from ..errors import (
    AlgorithmNotAllowed,
    ConstraintError,
    CriticalHeaderUnsupported,
    DelegationError,
    InvalidTokenType,
    IssuerNotAuthorized,
    LedgerError,
    MalformedToken,
    McpClientAuthError,
    TokenSignatureInvalid,
    UnknownKey,
)
from ..keys import Preverified, TrustStore
from ..policy import PLUMBING_ACTIONS
from .anchor import AnchorPoint
from .format import (
    CHECKPOINT_TYP,
    GENESIS_PREV,
    LEDGER_VERSION,
    LEGACY_RECOVERY_MESSAGE,
    NO_RUN,
    RECOVERY_TYP,
    LedgerEntry,
    parse_ts,
)
from .reader import (
    CLOSED_BY_RECOVERY,
    LedgerReader,
    RawLine,
    RunSummary,
    TornTail,
    closing_recoveries,
    summarize,
)

__all__ = [
    "CHECKS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNSEALED_TAIL",
    "TAIL_CHECKS",
    "Failure",
    "Recovery",
    "Report",
    "Tail",
    "verify_ledger",
]

#: :attr:`Report.exit_code` (and ``mcpclient-auth ledger verify``'s): every check holds.
EXIT_OK = 0
#: A check failed: the file, a token or a run is not what it claims.
EXIT_FAILED = 1
#: Only the tail failed: the sealed part verifies, but lines after the last seal/checkpoint (or a
#: torn last line) are vouched for by no signature — a crashed or still-running writer, or an
#: appended forgery; ``allow_unsealed_tail`` accepts them.
EXIT_UNSEALED_TAIL = 3

#: Every check the verifier runs, by the name failures carry.
CHECKS: dict[str, str] = {
    "line_malformed": "a line is not a valid v1 ledger entry",
    "torn_tail": "the last line has no newline: a write did not finish",
    "seq_gap": "seq does not count up by one from the previous entry",
    "chain_broken": "prev is not the hash of the previous line",
    "duplicate_jti": "a token id appears twice in a run (or a run has two mandates or records)",
    "token_invalid": "a token fails typ, alg, kid, signature or claim checks",
    "unknown_key": "a token is signed by a key that is not in the trust store",
    "issuer_not_authorized": "a mandate is signed by a key not registered as issuer for its iss, or an agent",
    "delegation_invalid": "a delegated mandate's chain fails (signer, narrowing, expiry, depth or ancestry)",
    "signer_not_agent": "an ECT, record or seal is signed by a key that is not a registered agent key",
    "token_time": "a token was logged outside its validity, or a call outlived its mandate",
    "entry_mismatch": (
        "an entry's jti, run, wid or trace id disagrees with its token, or a response answers no call"
    ),
    "principal_mismatch": "an entry names another principal than the run's mandate (its chain's root iss)",
    "mandate_missing": "a run's entries do not start with its mandate",
    "pred_unknown": "a pred is not an earlier mandate or ECT of the same run",
    "pred_newer": "a predecessor was issued after its child (beyond the clock skew)",
    "dag_cycle": "the run's execution DAG has a cycle",
    "dag_invalid": "the run's execution DAG breaks another rule (duplicate or too many preds)",
    "cap_violation": "a call's exec_act is not among the mandate's capabilities (only plumbing needs none)",
    "constraint_unknown": "the mandate carries a constraint no evaluator understands (it was unusable)",
    "constraint_violation": "a run made more calls of an action than its capability's max_calls",
    "ect_issuer_mismatch": "an ECT is not issued (or not signed) by the mandate's agent",
    "record_jti_mismatch": "the execution record's jti is not the mandate's",
    "record_invalid": "the execution record does not match its mandate or its claims are invalid",
    "run_unsealed": "a run has no seal",
    "seal_invalid": "a seal's signature, type or signer is wrong",
    "seal_mismatch": "a seal's run, count or last line hash disagrees with the file",
    "entry_after_seal": "a run has entries after its seal",
    "response_missing": "a sealed run has a tool call whose answer never arrived (no response entry with "
    "it; its stream ended without it, or first answered with another id)",
    "unsealed_tail": "lines after the last seal or checkpoint are covered by no signature",
    "recovery_invalid": "a recovery record says more than a writer can vouch for, closes no torn line, "
    "or its signature does not cover it",
    "checkpoint_invalid": "a checkpoint's signature, type or signer is wrong",
    "checkpoint_mismatch": "a checkpoint's seq, ts or last line hash disagrees with its line",
    "anchor_mismatch": "an anchored line is not in the ledger with the anchored hash",
    "anchor_missing": "the ledger ends before its last anchored line",
}
#: Checks that concern only what follows the last seal/checkpoint (exit code 3 when alone).
TAIL_CHECKS: frozenset[str] = frozenset({"unsealed_tail", "torn_tail"})
#: Meta a recovery record may carry: what its writer can vouch for (and, in records written before
#: 2026-12-01, ``last_good_seq`` and the fixed message).
_RECOVERY_META = frozenset({"code", "torn_bytes", "torn_hash"})
_LEGACY_RECOVERY_META = _RECOVERY_META | {"last_good_seq", "message"}

#: Token errors that mean "this is not a valid signature by a trusted key", whatever the token kind.
_SIGNATURE_ERRORS: tuple[type[McpClientAuthError], ...] = (
    MalformedToken,
    InvalidTokenType,
    AlgorithmNotAllowed,
    TokenSignatureInvalid,
    CriticalHeaderUnsupported,
)
#: The check a failed verification of each token kind reports (signature-level failures of a record
#: are still ``token_invalid``; a seal's are ``seal_invalid``).
_KIND_CHECK = {
    "mandate": "token_invalid",
    "ect": "token_invalid",
    "record": "record_invalid",
    "seal": "seal_invalid",
}
_SIGNATURE_CHECK = {**_KIND_CHECK, "record": "token_invalid"}
#: ``meta.code`` of ``response`` entries that are no answer to the call: its stream ended without the
#: JSON-RPC response, or the first response on it (where the MCP client stops) carried another id.
_NO_ANSWER = frozenset({"response_missing", "answer_id_mismatch"})
#: Entries of finished runs sent to a worker process at a time.
_BATCH_ENTRIES = 500


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check. ``seq``/``jti``/``run`` are ``None`` when the line did not say."""

    seq: int | None
    jti: str | None
    run: str | None
    check: str
    reason: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "jti": self.jti,
            "run": self.run,
            "check": self.check,
            "reason": self.reason,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class Recovery:
    """A torn line that a writer closed with a recovery record (at ``seq``); ``signed``: the record
    carries the writer's signature over what it found."""

    seq: int
    line: int
    torn_bytes: int
    last_good_seq: int | None
    signed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "line": self.line,
            "torn_bytes": self.torn_bytes,
            "last_good_seq": self.last_good_seq,
            "signed": self.signed,
        }


@dataclass(slots=True)
class Tail:
    """What follows the last seal or checkpoint and no signature covers.

    ``after_seq``: the seq of that last seal/checkpoint (0: the ledger has none); ``first_line`` /
    ``first_seq``: where the uncovered part starts; ``lines``: how many lines it has; ``runs``: runs
    with entries in it (still being written, or whose writer crashed); ``torn``: it ends in a torn line.
    """

    after_seq: int = 0
    first_line: int | None = None
    first_seq: int | None = None
    lines: int = 0
    runs: set[str] = field(default_factory=set)
    torn: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "after_seq": self.after_seq,
            "first_line": self.first_line,
            "first_seq": self.first_seq,
            "lines": self.lines,
            "runs": sorted(self.runs),
            "torn": self.torn,
        }


@dataclass(slots=True)
class Report:
    """The verification result. ``ok`` only when there is no failure at all."""

    failures: list[Failure] = field(default_factory=list)
    runs: dict[str, RunSummary] = field(default_factory=dict)
    torn_tail: TornTail | None = None
    recoveries: list[Recovery] = field(default_factory=list)
    entries: int = 0
    lines: int = 0
    tokens_verified: int = 0
    #: The uncovered tail (None when the last line is a seal or checkpoint, or the file is empty);
    #: reported whether or not ``allow_unsealed_tail`` accepted it.
    tail: Tail | None = None
    #: Anchor points checked and found (see ``verify_ledger(..., anchor=)``).
    anchored: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK`, :data:`EXIT_UNSEALED_TAIL` (only :data:`TAIL_CHECKS` failed) or
        :data:`EXIT_FAILED`."""
        if not self.failures:
            return EXIT_OK
        if all(failure.check in TAIL_CHECKS for failure in self.failures):
            return EXIT_UNSEALED_TAIL
        return EXIT_FAILED

    def checks(self) -> dict[str, int]:
        """Failure counts by check name."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.check] = counts.get(failure.check, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        torn = self.torn_tail
        return {
            "ok": self.ok,
            "entries": self.entries,
            "lines": self.lines,
            "tokens_verified": self.tokens_verified,
            "checks": self.checks(),
            "failures": [f.to_dict() for f in self.failures],
            "runs": [summary.to_dict() for summary in self.runs.values()],
            "torn_tail": None
            if torn is None
            else {"offset": torn.offset, "length": torn.length, "hash": torn.hash, "line": torn.number},
            "recoveries": [r.to_dict() for r in self.recoveries],
            "tail": None if self.tail is None else self.tail.to_dict(),
            "anchored": self.anchored,
            "exit_code": self.exit_code,
        }


# --- token checks ------------------------------------------------------------------------------------


def _verify_seal(token: str, trust: TrustStore, mandate: Mandate | None) -> jose.DecodedJWS:
    return jose.verify(token, trust, typs=(jose.SEAL_TYP,))


#: Full verification (signature and claims, not time) per token kind; each raises its typed error.
#: (A mandate is verified in ``_RunChecker._token``, with the pass's verified ancestors.)
#: ``mandate`` is the run's mandate, which a record must repeat (None: check the record alone).
_VERIFY: dict[str, Callable[[str, TrustStore, Mandate | None], Any]] = {
    "ect": lambda token, trust, _: ExecutionContextToken.verify(
        token, trust, verify_time=False, max_age=None
    ),
    "record": lambda token, trust, mandate: ExecutionRecord.verify(
        token, trust, mandate=mandate, verify_time=False
    ),
    "seal": _verify_seal,
}
#: Parsing without the signature, per token kind (to keep checking a run around a bad signature).
_DECODE: dict[str, Callable[[str], Any]] = {
    "mandate": Mandate.decode,
    "ect": ExecutionContextToken.decode,
    "record": ExecutionRecord.decode,
    "seal": jose.decode,
}


def _check_for(kind: str, exc: Exception) -> tuple[str, str]:
    if isinstance(exc, UnknownKey):
        check = "unknown_key"
    elif isinstance(exc, IssuerNotAuthorized):
        check = "issuer_not_authorized"
    elif isinstance(exc, DelegationError):
        check = "delegation_invalid"
    elif getattr(exc, "code", None) == "signer_not_agent":
        check = "signer_not_agent"
    elif isinstance(exc, _SIGNATURE_ERRORS):
        check = _SIGNATURE_CHECK[kind]
    else:
        check = _KIND_CHECK[kind]
    if isinstance(exc, McpClientAuthError):
        return check, f"{kind}: {exc.code}: {exc.message}"
    # Foreign exceptions are bugs somewhere below us, but a verifier reports; it never dies on
    # hostile input. The message is the exception type only (it could quote token bytes).
    return check, f"{kind}: internal_error: {type(exc).__name__}"


# --- one run -------------------------------------------------------------------------------------------


#: A call charged to an ancestor mandate's budget: (seq, ECT jti, ancestor jti, action, max_calls).
AncestorCall = tuple[int, "str | None", str, str, int]


class _RunChecker:
    """Every check that concerns one run, fed its entries in file order.

    State is the run's own: node ids with their ``iat`` and the DAG edges, dropped with the checker.
    Runs in this process (``jobs=1``) or in a worker process (``jobs>1``), identically.
    """

    def __init__(
        self, run: str, trust: TrustStore, skew: float, parents: dict[str, Mandate] | None = None
    ) -> None:
        self.run = run
        self.trust = trust
        self.skew = skew
        #: Ancestors of delegated mandates verified earlier in this pass (same trust, same skew), by
        #: token text: many runs delegated from one mandate verify it once (Mandate.verify).
        self._parents = parents
        self.failures: list[Failure] = []
        self.summary = RunSummary(run)
        self.tokens_verified = 0
        self.sealed = False
        self.mandate: Mandate | None = None
        #: Read once from the verified mandate (they are asked for on every entry / call).
        self._principal: str | None = None
        self._ancestors: list[Mandate] = []
        self._mandate_seen = False
        self._missing_reported = False
        self._record_seen = False
        self._count = 0
        #: jti -> iat (None when unknown) of the mandate and every ECT of the run, in file order.
        self._iat: dict[str, int | None] = {}
        #: ECT jti -> pred, for the cycle check when a forward reference was seen.
        self._nodes: dict[str, list[str]] = {}
        #: (seq, child jti, pred) for preds that were not yet known when their child was read.
        self._forward: list[tuple[int, str, str]] = []
        self._kid_binding: dict[tuple[str, str], bool] = {}
        #: action -> ECTs of the run, for actions whose capability has ``max_calls``.
        self._calls: dict[str, int] = {}
        #: (seq, ECT jti, ancestor jti, action, max_calls) for each call a budgeted ancestor pays for.
        self._ancestor_calls: list[AncestorCall] = []
        #: ECT jti -> seq of the tool calls whose answer has not been seen yet.
        self._unanswered: dict[str, int] = {}
        #: ECT jti of the tool calls whose stream answered first with another id (for the reason).
        self._mismatched: set[str] = set()
        #: The claims of the token the current entry's handler parsed (None: it parsed none).
        self._parsed_claims: dict[str, Any] | None = None
        self._handlers: dict[str, Callable[[LedgerEntry], None]] = {
            "mandate": self._mandate,
            "ect": self._ect,
            "response": self._response,
            "record": self._record,
            "seal": self._seal,
            "denial": self._nothing,
            "error": self._nothing,
        }

    def fail(self, entry: LedgerEntry | None, check: str, reason: str, *, jti: str | None = None) -> None:
        seq = entry.seq if entry is not None else None
        self.failures.append(Failure(seq, jti or (entry.jti if entry else None), self.run, check, reason))

    def feed(self, entry: LedgerEntry) -> None:
        kind = entry.kind
        # A mandate or record is summarised from the claims its handler parses (not decoded twice).
        deferred = kind == "mandate" or kind == "record"
        if not deferred:
            summarize(self.summary, entry)
        if not self._mandate_seen and kind != "mandate" and not self._missing_reported:
            self._missing_reported = True
            self.fail(entry, "mandate_missing", "the run's first entry is not its mandate")
        self._parsed_claims = None
        self._handlers[kind](entry)
        if deferred:
            summarize(self.summary, entry, claims=self._parsed_claims)
        principal = entry.meta.get("principal")
        if principal is not None and self._principal is not None and principal != self._principal:
            # The run acts for the mandate's principal; a log naming another user misattributes it.
            self.fail(entry, "principal_mismatch", "the entry names another principal than the run's mandate")
        if entry.kind != "seal":
            self._count += 1

    # tokens --------------------------------------------------------------------------------------

    def _token(self, entry: LedgerEntry, mandate: Mandate | None = None) -> Any:
        """The entry's token, verified; on failure the failure is recorded and the *unverified*
        token returned (so one bad signature neither hides the structural problems around it nor
        cascades into pred_unknown for its children), or None when it does not even parse."""
        token = entry.token
        if not token:
            self.fail(entry, _KIND_CHECK[entry.kind], f"a {entry.kind} entry without a token")
            return None
        self.tokens_verified += 1
        try:
            if entry.kind == "mandate":
                verified = Mandate.verify(
                    token, self.trust, verify_time=False, verified_parents=self._parents
                )
            else:
                verified = _VERIFY[entry.kind](token, self.trust, mandate)
        except Exception as exc:  # see _check_for: report, never crash
            self.fail(entry, *_check_for(entry.kind, exc))
        else:
            self._parsed_claims = verified.claims
            return verified
        try:
            decoded = _DECODE[entry.kind](token)
        except Exception:  # already reported above
            return None
        self._parsed_claims = decoded.claims
        return decoded

    def _times(self, entry: LedgerEntry, iat: int, exp: int | None) -> None:
        ts = parse_ts(entry.ts)
        if iat > ts + self.skew:
            self.fail(entry, "token_time", f"the {entry.kind} token was issued after it was logged")
        if exp is not None and ts > exp + self.skew:
            self.fail(entry, "token_time", f"the {entry.kind} token was logged after it expired")

    def _agent_signed(self, kid: Any) -> bool:
        """False when a trusted key that is no agent key signed (an unknown kid is reported already)."""
        return not isinstance(kid, str) or kid not in self.trust or self.trust.is_agent(kid)

    def _named(self, kid: Any, sub: str) -> bool:
        """Whether the trusted key ``kid`` carries the name ``sub`` (an unknown kid is reported already)."""
        if not isinstance(kid, str) or kid not in self.trust:
            return True
        named = self.trust.agent_named(sub)  # exactly one agent key may carry the name
        return named is not None and named.thumbprint == self.trust.get(kid).thumbprint

    def _bound_key(self, kid: Any, jkt: str) -> bool:
        """Whether the key named ``kid`` is the one a mandate's ``cnf.jkt`` binds."""
        if not isinstance(kid, str):
            return False
        cached = self._kid_binding.get((kid, jkt))
        if cached is None:
            cached = kid in self.trust and self.trust.get(kid).thumbprint == jkt
            self._kid_binding[(kid, jkt)] = cached
        return cached

    # entries by kind -------------------------------------------------------------------------------

    def _nothing(self, entry: LedgerEntry) -> None:
        """Denials and errors carry no token; they are counted in the run summary."""

    def _mandate(self, entry: LedgerEntry) -> None:
        if self._mandate_seen:
            self.fail(entry, "duplicate_jti", "a second mandate entry in the run")
            return
        self._mandate_seen = True
        mandate = self._token(entry)
        if not isinstance(mandate, Mandate):
            return
        if mandate.jti != self.run or entry.jti != mandate.jti:
            self.fail(entry, "entry_mismatch", "the run id and the entry's jti must be the mandate's jti")
        self._times(entry, mandate.iat, mandate.exp)
        try:
            check_known(mandate.cap)
        except ConstraintError as exc:
            self.fail(entry, "constraint_unknown", f"mandate: {exc.code}: {exc.message}")
        self.mandate = mandate
        self._principal = mandate.principal
        self._ancestors = mandate.chain[:-1]
        self.summary.principal = self._principal  # whom the mandate names, not what the log says
        self._iat[mandate.jti] = mandate.iat

    def _ect(self, entry: LedgerEntry) -> None:
        ect = self._token(entry)
        if not isinstance(ect, ExecutionContextToken):
            if entry.jti and entry.jti not in self._iat:
                self._iat[entry.jti] = None  # a known id: its children do not cascade into pred_unknown
            return
        jti = ect.jti
        if entry.jti != jti:
            self.fail(entry, "entry_mismatch", "the entry's jti is not its ECT's jti")
        if jti in self._iat:
            self.fail(entry, "duplicate_jti", "this ECT id appears earlier in the run")
        if ect.wid is not None and ect.wid != self.run:
            self.fail(entry, "entry_mismatch", "the ECT's wid is not the entry's run")
        if "trace" in entry.meta and entry.meta["trace"] != _trace_id(ect):
            # The line an auditor follows to a trace must name the trace the signed ECT names.
            self.fail(entry, "entry_mismatch", "the entry's trace id is not its ECT's ect_ext.trace")
        if not self._agent_signed(ect.header.get("kid")):
            self.fail(entry, "signer_not_agent", "the ECT is not signed by a registered agent key")
        mandate = self.mandate
        if mandate is not None:
            if ect.iss != mandate.sub:
                self.fail(entry, "ect_issuer_mismatch", "the ECT's iss is not the mandate's sub (the agent)")
            jkt = mandate.agent_kid
            if jkt is not None and not self._bound_key(ect.header.get("kid"), jkt):
                self.fail(entry, "ect_issuer_mismatch", "the ECT is not signed by the key the mandate binds")
            elif jkt is None and not self._named(ect.header.get("kid"), mandate.sub):
                # An unbound mandate names its agent only: the signer must at least be that agent's key.
                self.fail(entry, "ect_issuer_mismatch", "the ECT is not signed by a key named as the agent")
            action = ect.exec_act
            if action not in PLUMBING_ACTIONS and not mandate.allows(action):
                self.fail(entry, "cap_violation", f"exec_act {action!r} is not among the mandate's cap")
            self._count_call(entry, mandate, action)
            if ect.iat > mandate.exp + self.skew:
                self.fail(entry, "token_time", "the call was made after its mandate expired")
        self._times(entry, ect.iat, ect.exp)
        for parent in ect.pred:
            if parent not in self._iat:
                self._forward.append((entry.seq, jti, parent))
                continue
            parent_iat = self._iat[parent]
            if parent_iat is not None and parent_iat > ect.iat + self.skew:
                self.fail(entry, "pred_newer", f"predecessor {parent} was issued after this token")
        self._iat.setdefault(jti, ect.iat)
        self._nodes.setdefault(jti, ect.pred)
        if entry.meta.get("method") == "tools/call" and entry.jti == jti:
            self._unanswered[jti] = entry.seq

    def _count_call(self, entry: LedgerEntry, mandate: Mandate, action: str) -> None:
        """``max_calls``: the run's ECTs for a budgeted action (bodies are not in the ledger, so
        argument constraints cannot be re-checked here; the server enforces them before the tool runs)."""
        for ancestor in self._ancestors:
            # A delegated run spends its ancestors' budgets too; they are totalled over every run.
            bound = (ancestor.constraints(action) or {}).get("max_calls")
            if type(bound) is int:
                self._ancestor_calls.append((entry.seq, entry.jti, ancestor.jti, action, bound))
        limit = (mandate.constraints(action) or {}).get("max_calls")
        if type(limit) is not int:
            return
        made = self._calls.get(action, 0) + 1
        self._calls[action] = made
        if made > limit:
            self.fail(entry, "constraint_violation", f"call {made} of {action!r} exceeds max_calls {limit}")

    def _response(self, entry: LedgerEntry) -> None:
        if entry.jti is None or entry.jti == self.run or entry.jti not in self._iat:
            self.fail(entry, "entry_mismatch", "the response answers no earlier ECT of its run")
        elif entry.meta.get("code") not in _NO_ANSWER:
            self._unanswered.pop(entry.jti, None)
        elif entry.meta.get("code") == "answer_id_mismatch":
            self._mismatched.add(entry.jti)

    def _record(self, entry: LedgerEntry) -> None:
        if self._record_seen:
            self.fail(entry, "duplicate_jti", "a second execution record in the run")
        self._record_seen = True
        mandate = self.mandate
        try:
            jti: str | None = ExecutionRecord.decode(entry.token or "").jti
        except Exception:  # reported by _token below
            jti = None
        if jti is not None and (jti != self.run or (mandate is not None and jti != mandate.jti)):
            self.fail(entry, "record_jti_mismatch", "the record's jti is not the mandate's jti")
            mandate = None  # check its signature alone: comparing it with the mandate says nothing new
        record = self._token(entry, mandate)
        if not isinstance(record, ExecutionRecord):
            return
        self._times(entry, record.iat, None)
        for parent in record.pred:
            if parent not in self._iat:
                self.fail(entry, "pred_unknown", f"the record's pred {parent} is no earlier ECT of the run")

    def _seal(self, entry: LedgerEntry) -> None:
        self.sealed = True
        jws = self._token(entry)
        claims = jws.claims if isinstance(jws, jose.DecodedJWS) else None
        if claims is None:
            return
        count, last, iat = claims.get("count"), claims.get("last"), claims.get("iat")
        if claims.get("run") != self.run:
            self.fail(entry, "seal_mismatch", "the seal names another run")
        if count != self._count:
            reason = f"the seal covers {count!r} entries, the file has {self._count}"
            self.fail(entry, "seal_mismatch", reason)
        if last != entry.prev:
            self.fail(entry, "seal_mismatch", "the seal's last line hash is not the line before it")
        # Nothing after the last line covers its bytes: every field must be fixed by the signature.
        # Seals since 2026-12-01 sign their own seq and ts; older ones leave ts to the iat check below.
        if entry.jti is not None:
            self.fail(entry, "seal_mismatch", "a seal entry's jti must be null")
        if "seq" in claims and claims["seq"] != entry.seq:
            self.fail(entry, "seal_mismatch", "the seal's line has another seq than it signs")
        if "ts" in claims and claims["ts"] != entry.ts:
            self.fail(entry, "seal_mismatch", "the seal's line has another ts than it signs")
        # A seal is often the file's last line, which no later ``prev`` covers: its unsigned meta
        # must repeat exactly what the signature says (else it could be edited unseen).
        if entry.meta != {"count": count}:
            self.fail(entry, "seal_mismatch", "the seal entry's meta is not exactly the signed count")
        if type(iat) is int:
            # A seal is signed and logged in one step, and nothing after it covers its line: its
            # ``ts`` must match the signed ``iat`` (within the skew) in both directions.
            if abs(parse_ts(entry.ts) - iat) > self.skew + 1:
                self.fail(entry, "token_time", "the seal was logged at another time than it was signed")
        else:
            self.fail(entry, "seal_invalid", "the seal has no integer 'iat'")
        if not self._agent_signed(jws.header.get("kid")):
            self.fail(entry, "signer_not_agent", "the seal is not signed by a registered agent key")
        mandate = self.mandate
        jkt = mandate.agent_kid if mandate is not None else None
        if jkt is not None and not self._bound_key(jws.header.get("kid"), jkt):
            self.fail(entry, "seal_invalid", "the seal is not signed by the run's agent key")
        elif mandate is not None and jkt is None and not self._named(jws.header.get("kid"), mandate.sub):
            self.fail(entry, "seal_invalid", "the seal is not signed by a key named as the run's agent")

    def finish(self) -> _RunResult:
        """End of the run (its seal, or the end of the file): settle forward references."""
        if self._forward:
            self._settle_forward()
        if self.sealed:
            for jti, seq in self._unanswered.items():
                reason = "the tool call's answer never arrived (no response entry carries it)"
                if jti in self._mismatched:
                    reason = "the call's stream answered first with another JSON-RPC id (answer_id_mismatch)"
                self.failures.append(Failure(seq, jti, self.run, "response_missing", reason))
        return _RunResult(
            self.run, self.failures, self.summary, self.tokens_verified, self.sealed, self._ancestor_calls
        )

    def _settle_forward(self) -> None:
        # Forward references only exist in damaged ledgers: sort them into cycles and unknown ids.
        roots = {self.mandate.jti} if self.mandate is not None else set()
        on_cycle: set[str] = set()
        for jti, problem in check_dag(self._nodes, known_roots=roots):
            if problem.startswith("cycle") or "itself" in problem:
                on_cycle.add(jti)
                self.fail(None, "dag_cycle", problem, jti=jti)
            elif not problem.startswith("unknown"):
                self.fail(None, "dag_invalid", problem, jti=jti)
        for seq, child, parent in self._forward:
            if child in on_cycle and parent in on_cycle:
                continue
            where = "a later entry" if parent in self._iat else "no mandate or ECT of the run"
            self.failures.append(Failure(seq, child, self.run, "pred_unknown", f"pred {parent} is {where}"))


@dataclass(frozen=True, slots=True)
class _RunResult:
    run: str
    failures: list[Failure]
    summary: RunSummary
    tokens_verified: int
    sealed: bool
    ancestor_calls: list[AncestorCall]


# --- where the runs are checked ---------------------------------------------------------------------

#: Entries whose signatures are checked back to back before the entries themselves (measured on a
#: 2-core VM: 16 gained nothing, 64 ≈ 5-7% of the whole pass, 256 ≈ 4%).
_PREVERIFY_BATCH = 64
#: The kinds whose token the run checks verify (a token on any other line is never verified).
_PREVERIFY_KINDS = frozenset(_KIND_CHECK)
#: Protected header segment -> its kid (None: unusable); signers reuse one header, so this stays tiny.
_HEADER_KIDS: dict[str, str | None] = {}
_UNSEEN = ""  # never a kid: _kid_of answers None for an empty one


def _preverify(trust: TrustStore, tokens: Iterable[str | None]) -> Preverified:
    """Check the signatures of ``tokens`` now, back to back, where their kid names a trusted key.

    ECDSA costs ≈ 13 µs more per token when interleaved with the checks' Python (cold caches) than in
    a tight loop. This is no check of its own: the strict path (``jose.verify`` and the token
    classes) runs unchanged afterwards and only finds its ``PublicKey.verify`` answered for a
    signature found valid here; a token that does not split, names no trusted key, or whose
    signature is invalid is simply verified there (:class:`~mcpclient_auth.keys.Preverified`)."""
    batch = Preverified()
    for token in tokens:
        if not token:
            continue
        head, _, signature = token.rpartition(".")
        header = head.partition(".")[0]
        kid = _HEADER_KIDS.get(header, _UNSEEN)
        if kid is _UNSEEN:
            if len(_HEADER_KIDS) >= 64:  # bounded (another thread may clear it too: harmless)
                _HEADER_KIDS.clear()
            kid = _HEADER_KIDS[header] = _kid_of(header)
        if kid is None or kid not in trust:
            continue
        try:
            data, raw = head.encode("ascii"), b64url_decode(signature)
        except ValueError:  # UnicodeEncodeError included: jose.decode refuses that token anyway
            continue
        batch.add(trust.get(kid), data, raw)
    return batch


def _kid_of(header: str) -> str | None:
    try:
        value = strict_json_loads(b64url_decode(header), error=ValueError, what="the header")
    except (ValueError, RecursionError):
        return None
    kid = value.get("kid") if isinstance(value, dict) else None
    return kid if isinstance(kid, str) and kid else None


class _InlineRuns:
    """jobs=1: each run is checked here, entry by entry, as the file is read."""

    def __init__(self, trust: TrustStore, skew: float, done: Callable[[_RunResult], None]) -> None:
        self._trust, self._skew, self._done = trust, skew, done
        self._open: dict[str, _RunChecker] = {}
        self._parents: dict[str, Mandate] = {}
        self._queue: list[LedgerEntry] = []

    def feed(self, entry: LedgerEntry) -> None:
        # Entries wait in a short queue so their signatures are checked back to back first (see
        # _preverify); then each is checked exactly as before, in file order.
        self._queue.append(entry)
        if len(self._queue) >= _PREVERIFY_BATCH:
            self._drain()

    def _drain(self) -> None:
        queue, self._queue = self._queue, []
        batch = _preverify(self._trust, [entry.token for entry in queue if entry.kind in _PREVERIFY_KINDS])
        with batch:
            for entry in queue:
                checker = self._open.get(entry.run)
                if checker is None:
                    checker = self._open[entry.run] = _RunChecker(
                        entry.run, self._trust, self._skew, self._parents
                    )
                checker.feed(entry)
                if entry.kind == "seal":
                    del self._open[entry.run]
                    self._done(checker.finish())

    def close(self) -> None:
        self._drain()
        for checker in self._open.values():
            self._done(checker.finish())
        self._open.clear()


#: An entry as sent to a worker: (seq, ts, kind, jti, token, meta, prev) — cheaper to pickle than
#: the dataclass, and the run id is sent once per run.
_Wire = tuple[int, str, str, "str | None", "str | None", dict[str, Any], str]

_WORKER_TRUST: TrustStore | None = None
#: A worker's verified ancestors (its pool serves one verify_ledger pass: one trust, one skew).
_WORKER_PARENTS: dict[str, Mandate] = {}


def _init_worker(jwks: dict[str, Any]) -> None:
    global _WORKER_TRUST
    _WORKER_TRUST = TrustStore.from_jwks(jwks)
    _WORKER_PARENTS.clear()


def _check_runs(runs: list[tuple[str, list[_Wire]]], skew: float) -> list[_RunResult]:
    """Worker side: check whole runs (tokens and structure), return their results."""
    trust = _WORKER_TRUST
    assert trust is not None, "worker not initialised"
    checkers: list[_RunChecker] = []
    queue: list[tuple[_RunChecker, _Wire]] = []
    for run, wires in runs:
        checker = _RunChecker(run, trust, skew, _WORKER_PARENTS)
        checkers.append(checker)
        queue.extend((checker, wire) for wire in wires)
    # As _InlineRuns: the signatures of the next entries back to back, then the entries in order
    # (each run's own; a run's result depends on its entries alone).
    for start in range(0, len(queue), _PREVERIFY_BATCH):
        part = queue[start : start + _PREVERIFY_BATCH]
        with _preverify(trust, [wire[4] for _, wire in part if wire[2] in _PREVERIFY_KINDS]):
            for checker, (seq, ts, kind, jti, token, meta, prev) in part:
                checker.feed(LedgerEntry(LEDGER_VERSION, seq, ts, checker.run, kind, jti, token, meta, prev))
    return [checker.finish() for checker in checkers]


def _pool_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: ``fork`` only where it is safe and cheap — on Linux, from a
    process that has exactly one thread (the CLI; ``/proc/self/task`` counts every OS thread, not
    only Python's) — else ``spawn``. A fork of a threaded process (servers, event loops, a C
    library's threads) can inherit locks held by another thread; a spawned worker cannot, but it
    imports the whole package first (≈ 0.4-0.5 s of CPU per worker on a 2-core machine: a third
    of the workers' CPU on a 20,000-entry ledger, and what kept ``--jobs 2`` from scaling)."""
    if sys.platform.startswith("linux"):
        try:
            threads = len(os.listdir("/proc/self/task"))
        except OSError:
            threads = 0
        if threads == 1 and threading.active_count() == 1:
            return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class _PooledRuns:
    """jobs>1: entries are grouped by run here; each finished run (its seal read, or the file ended)
    is checked in a worker process. Whole runs travel together, so each worker holds the full state
    of the runs it checks and nothing is shared."""

    def __init__(self, trust: TrustStore, skew: float, jobs: int, done: Callable[[_RunResult], None]) -> None:
        self._skew, self._done = skew, done
        self._open: dict[str, list[_Wire]] = {}
        self._ready: list[tuple[str, list[_Wire]]] = []
        self._ready_entries = 0
        self._pending: set[Future[list[_RunResult]]] = set()
        self._max_pending = 2 * jobs  # back-pressure: memory stays bounded however large the file
        self._pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=_pool_context(),
            initializer=_init_worker,
            initargs=(trust.to_jwks(),),  # rebuilt from the JWKS in the worker, forked or spawned alike
        )

    def feed(self, entry: LedgerEntry) -> None:
        wires = self._open.get(entry.run)
        if wires is None:
            wires = self._open[entry.run] = []
        wires.append((entry.seq, entry.ts, entry.kind, entry.jti, entry.token, entry.meta, entry.prev))
        if entry.kind == "seal":
            self._ready.append((entry.run, self._open.pop(entry.run)))
            self._ready_entries += len(wires)
            if self._ready_entries >= _BATCH_ENTRIES:
                self._submit()

    def _submit(self) -> None:
        if not self._ready:
            return
        while len(self._pending) >= self._max_pending:
            self._harvest(wait(self._pending, return_when=FIRST_COMPLETED).done)
        self._pending.add(self._pool.submit(_check_runs, self._ready, self._skew))
        self._ready, self._ready_entries = [], 0

    def _harvest(self, done: Iterable[Future[list[_RunResult]]]) -> None:
        for future in list(done):
            self._pending.discard(future)
            try:
                results = future.result()
            except BrokenProcessPool:
                raise LedgerError("a verification worker process died") from None
            for result in results:
                self._done(result)

    def close(self) -> None:
        try:
            self._ready.extend(self._open.items())  # runs without a seal, at the end of the file
            self._open.clear()
            self._submit()
            self._harvest(wait(self._pending).done)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --- the file ------------------------------------------------------------------------------------------


class _Verifier:
    """The line pass (parse, seq, chain, torn tail, recoveries, checkpoints, the uncovered tail,
    anchors) and the routing of entries to runs."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        skew: float,
        jobs: int,
        allow_unsealed: bool,
        allow_unsealed_tail: bool,
        anchors: dict[int, str],
    ) -> None:
        self.trust = trust
        self.skew = skew
        self.allow_unsealed = allow_unsealed
        self.allow_unsealed_tail = allow_unsealed_tail
        self.anchors = anchors
        self.report = Report()
        self.runs: _InlineRuns | _PooledRuns
        if jobs > 1:
            self.runs = _PooledRuns(trust, skew, jobs, self._run_done)
        else:
            self.runs = _InlineRuns(trust, skew, self._run_done)
        self.sealed: set[str] = set()
        self._ancestor_calls: list[tuple[AncestorCall, str]] = []
        self.tail = Tail()
        #: The recovery record judged together with the unreadable line before it: (seq, signed).
        self._judged: tuple[int, bool] | None = None

    def fail(self, entry: LedgerEntry | None, check: str, reason: str, *, line: int | None = None) -> None:
        self.report.failures.append(
            Failure(
                entry.seq if entry else None,
                entry.jti if entry else None,
                (entry.run or None) if entry else None,
                check,
                reason,
                line,
            )
        )

    def run(self, lines: Iterable[RawLine]) -> Report:
        expected_prev = GENESIS_PREV
        last_seq = 0
        pending: RawLine | None = None  # an unreadable line, waiting to see if a recovery follows
        pending_before = GENESIS_PREV  # the hash of the line before it
        pending_seq = 0  # the seq of the last entry before it
        previous: RawLine | None = None
        try:
            for line in lines:
                self.report.lines += 1
                if pending is not None:
                    self._judge_unreadable(pending, pending_before, pending_seq, line)
                    pending = None
                if not line.terminated:
                    self.report.torn_tail = TornTail(line.offset, line.length, line.hash, line.number)
                    self._uncovered(line.number, None)
                    self.tail.torn = True
                    if not self.allow_unsealed_tail:
                        self.fail(
                            None,
                            "torn_tail",
                            f"the last line ({line.length} bytes, after seq {last_seq}) has no newline",
                            line=line.number,
                        )
                    break
                entry = line.entry
                if entry is None:
                    pending, pending_before, pending_seq = line, expected_prev, last_seq
                    previous = line
                    expected_prev = line.hash
                    if line.error == CLOSED_BY_RECOVERY:
                        # Complete-looking torn bytes: the writer took their seq (it is checked to be
                        # the next one), so its recovery record follows that seq. Never an entry.
                        last_seq += 1
                    continue
                self.report.entries += 1
                number = line.number
                if entry.prev != expected_prev:
                    self.fail(entry, "chain_broken", "prev is not the hash of the previous line", line=number)
                if entry.seq != last_seq + 1:
                    self.fail(entry, "seq_gap", f"expected seq {last_seq + 1}, not {entry.seq}", line=number)
                if self.anchors:
                    self._check_anchor(entry, line)
                if entry.is_recovery:
                    self._recovery(entry, line, previous, expected_prev)
                elif entry.kind == "checkpoint" and entry.run == NO_RUN:
                    self._checkpoint(entry)
                else:
                    self._route(entry, number)
                expected_prev, last_seq = line.hash, entry.seq
                previous = line
            if pending is not None:
                self._judge_unreadable(pending, pending_before, pending_seq, None)
        finally:
            self.runs.close()
        self._check_ancestor_budgets()
        report = self.report
        self._finish_tail()
        for seq, digest in sorted(self.anchors.items()):
            check = "anchor_missing" if seq > last_seq else "anchor_mismatch"
            where = f"the ledger ends at seq {last_seq}" if seq > last_seq else "no valid line has that seq"
            report.failures.append(
                Failure(seq, None, None, check, f"anchored seq {seq} (hash {digest[:12]}…): {where}")
            )
        report.failures.sort(key=_failure_order)
        # A run is verified when no failure at all names it (chain and seq failures on its lines too).
        for summary in report.runs.values():
            summary.verified = True
        for failure in report.failures:
            if failure.run in report.runs:
                report.runs[failure.run].verified = False
        if report.tail is not None and not self.allow_unsealed_tail:
            for run in report.tail.runs:  # nothing vouches for their last lines
                if run in report.runs:
                    report.runs[run].verified = False
        return report

    # --- the uncovered tail ------------------------------------------------------------------------

    def _covered_up_to(self, seq: int) -> None:
        """A seal or checkpoint at ``seq``: it signs every line before it (through the chain)."""
        self.tail = Tail(after_seq=seq)

    def _uncovered(self, number: int, entry: LedgerEntry | None) -> None:
        tail = self.tail
        if tail.first_line is None:
            tail.first_line = number
            tail.first_seq = entry.seq if entry is not None else None
        tail.lines += 1
        if entry is not None and entry.run != NO_RUN:
            tail.runs.add(entry.run)

    def _finish_tail(self) -> None:
        tail = self.tail
        if tail.first_line is None:
            return
        self.report.tail = tail
        if self.allow_unsealed_tail:
            return
        where = f"seal or checkpoint at seq {tail.after_seq}" if tail.after_seq else "start (no seal yet)"
        runs = f"; runs open there: {len(tail.runs)}" if tail.runs else ""
        torn = ", ending in a torn line" if tail.torn else ""
        self.report.failures.append(
            Failure(
                tail.first_seq,
                None,
                None,
                "unsealed_tail",
                f"{tail.lines} line(s) after the {where} are covered by no signature{torn}{runs}",
                tail.first_line,
            )
        )

    # --- recoveries ---------------------------------------------------------------------------------

    def _judge_unreadable(
        self, bad: RawLine, before: str, seq_before: int, following: RawLine | None
    ) -> None:
        recovery = following.entry if following is not None else None
        if recovery is None or not recovery.is_recovery or recovery.meta.get("torn_hash") != bad.hash:
            self.fail(None, "line_malformed", f"line {bad.number}: {bad.error}", line=bad.number)
            self._uncovered(bad.number, None)
            return
        problems = self._recovery_problems(recovery, bad, before)
        if not _looks_torn(bad, seq_before + 1):
            problems.append("the bytes it closes do not begin like the ledger's next line (a torn write)")
        signed = recovery.token is not None and not problems
        self._judged = (recovery.seq, signed)
        for problem in problems:
            self.fail(recovery, "recovery_invalid", problem, line=following.number if following else None)
        if not problems:
            self.report.recoveries.append(Recovery(recovery.seq, bad.number, bad.length, seq_before, signed))
        if not signed:
            self._uncovered(bad.number, None)

    def _recovery(
        self, entry: LedgerEntry, line: RawLine, previous: RawLine | None, expected_prev: str
    ) -> None:
        judged, self._judged = self._judged, None
        if judged is not None and judged[0] == entry.seq:
            signed = judged[1]  # judged with the unreadable line it closes
        elif (
            previous is not None
            and previous.entry is not None
            and entry.meta.get("torn_hash") == previous.hash
        ):
            # A line that was complete but lost its newline: the writer closed it and recorded that.
            # (Its own entry was checked as usual; the record must still say only what it may.)
            problems = self._recovery_problems(entry, previous, previous.entry.prev)
            for problem in problems:
                self.fail(entry, "recovery_invalid", problem, line=line.number)
            signed = entry.token is not None and not problems
            if not problems:
                self.report.recoveries.append(
                    Recovery(entry.seq, previous.number, previous.length, entry.seq - 1, signed)
                )
        else:
            self.fail(entry, "recovery_invalid", "the recovery record closes no torn line", line=line.number)
            signed = False
        if not signed:
            self._uncovered(line.number, entry)

    def _recovery_problems(self, entry: LedgerEntry, closed: RawLine, before: str) -> list[str]:
        """Why ``entry`` is not a recovery record a writer could have written after ``closed``."""
        problems: list[str] = []
        meta = entry.meta
        if entry.run != NO_RUN or entry.jti is not None:
            problems.append("a recovery record belongs to no run and has no jti")
        extra = set(meta) - (_LEGACY_RECOVERY_META if entry.token is None else _RECOVERY_META)
        if extra:
            problems.append(f"the recovery record carries more than a writer can vouch for: {sorted(extra)}")
        if meta.get("torn_bytes") != closed.length or type(meta.get("torn_bytes")) is not int:
            problems.append("torn_bytes is not the closed line's length")
        if "last_good_seq" in meta and meta["last_good_seq"] != entry.seq - 1:
            problems.append("last_good_seq is not the seq before the record")
        if "message" in meta and meta["message"] != LEGACY_RECOVERY_MESSAGE:
            problems.append("the recovery record's message is not the writer's")
        if entry.token is not None:
            problems.extend(self._recovery_signature(entry, before))
        return problems

    def _recovery_signature(self, entry: LedgerEntry, before: str) -> list[str]:
        try:
            jws = jose.verify(entry.token or "", self.trust, typs=(RECOVERY_TYP,))
        except Exception as exc:
            return [_check_for("seal", exc)[1].replace("seal: ", "recovery: ", 1)]
        self.report.tokens_verified += 1
        if not _may_sign_ledger(self.trust, jws.header.get("kid"), agent_ok=True):
            return ["the recovery is signed by an issuer key"]
        claims, meta = jws.claims, entry.meta
        expected = {
            "seq": entry.seq,
            "ts": entry.ts,
            "torn_bytes": meta.get("torn_bytes"),
            "torn_hash": meta.get("torn_hash"),
            "before": before,
        }
        wrong = sorted(name for name, value in expected.items() if claims.get(name) != value)
        return [f"the recovery's signature does not cover its {', '.join(wrong)}"] if wrong else []

    # --- checkpoints and anchors --------------------------------------------------------------------

    def _checkpoint(self, entry: LedgerEntry) -> None:
        self._covered_up_to(entry.seq)
        try:
            jws = jose.verify(entry.token or "", self.trust, typs=(CHECKPOINT_TYP,))
        except Exception as exc:
            check, reason = _check_for("seal", exc)
            check = "unknown_key" if check == "unknown_key" else "checkpoint_invalid"
            self.fail(entry, check, reason.replace("seal: ", "checkpoint: ", 1))
            return
        self.report.tokens_verified += 1
        if not _may_sign_ledger(self.trust, jws.header.get("kid"), agent_ok=False):
            self.fail(entry, "checkpoint_invalid", "the checkpoint is signed by an issuer or agent key")
        claims = jws.claims
        if claims.get("seq") != entry.seq or claims.get("ts") != entry.ts or claims.get("last") != entry.prev:
            self.fail(entry, "checkpoint_mismatch", "the checkpoint's seq, ts or last is not its line's")
        if entry.jti is not None or entry.meta:
            self.fail(entry, "checkpoint_mismatch", "a checkpoint entry has a null jti and empty meta")
        iat = claims.get("iat")
        if type(iat) is not int or abs(parse_ts(entry.ts) - iat) > self.skew + 1:
            self.fail(entry, "token_time", "the checkpoint was logged at another time than it was signed")

    def _check_anchor(self, entry: LedgerEntry, line: RawLine) -> None:
        digest = self.anchors.pop(entry.seq, None)
        if digest is None:
            return
        if digest != line.hash:
            self.fail(entry, "anchor_mismatch", "the line at this seq is not the one that was anchored")
        else:
            self.report.anchored += 1

    # --- runs ---------------------------------------------------------------------------------------

    def _route(self, entry: LedgerEntry, number: int) -> None:
        run = entry.run
        if run == NO_RUN or entry.kind == "checkpoint":
            # Only recovery records and checkpoints belong to no run (both handled before routing).
            self.fail(
                entry,
                "entry_mismatch",
                f"a {entry.kind} entry without a run" if run == NO_RUN else "a checkpoint belongs to no run",
            )
            self._uncovered(number, entry)
            return
        if run in self.sealed:
            self.fail(entry, "entry_after_seal", f"a {entry.kind} entry after the run's seal")
            self._uncovered(number, entry)
            return
        if run not in self.report.runs:
            self.report.runs[run] = RunSummary(run)  # holds the run's place in file order
        if entry.kind == "seal":
            self.sealed.add(run)
            self._covered_up_to(entry.seq)
        else:
            self._uncovered(number, entry)
        self.runs.feed(entry)

    def _run_done(self, result: _RunResult) -> None:
        report = self.report
        report.tokens_verified += result.tokens_verified
        report.failures.extend(result.failures)
        # A run still open in the uncovered tail is reported there (unsealed_tail), not twice.
        if not result.sealed and not self.allow_unsealed and result.run not in self.tail.runs:
            report.failures.append(Failure(None, None, result.run, "run_unsealed", "the run has no seal"))
        report.runs[result.run] = result.summary
        self._ancestor_calls.extend((call, result.run) for call in result.ancestor_calls)

    def _check_ancestor_budgets(self) -> None:
        """``max_calls`` of a mandate bounds the calls of all its delegations together, across runs."""
        made: dict[tuple[str, str], int] = {}
        for (seq, jti, ancestor, action, limit), run in sorted(self._ancestor_calls, key=lambda c: c[0][0]):
            count = made[(ancestor, action)] = made.get((ancestor, action), 0) + 1
            if count > limit:
                self.report.failures.append(
                    Failure(
                        seq,
                        jti,
                        run,
                        "constraint_violation",
                        f"call {count} of {action!r} under mandate {ancestor} (delegations included) "
                        f"exceeds its max_calls {limit}",
                    )
                )


def _looks_torn(line: RawLine, seq: int) -> bool:
    """Whether ``line`` could be a writer's torn write of the entry with ``seq``: its bytes begin like
    that entry's line (or are a beginning of that beginning). Bytes of any other shape were put there
    by something that is not a ledger writer, and a recovery record must not launder them."""
    head = b'{"v":%d,"seq":%d,' % (LEDGER_VERSION, seq)
    data = line.data
    return bool(data) and (data.startswith(head) or head.startswith(data))


def _may_sign_ledger(trust: TrustStore, kid: Any, *, agent_ok: bool) -> bool:
    """Whether a key may sign ledger-level lines: a checkpoint only a key with no role (a server's),
    a recovery also an agent key; never an issuer key."""
    if not isinstance(kid, str):
        return False
    if kid in trust.issuers:
        return False
    return agent_ok or not trust.is_agent(kid)


def _failure_order(failure: Failure) -> int:
    # File order; run-level failures (no line, no seq) last.
    if failure.seq is not None:
        return failure.seq
    return failure.line if failure.line is not None else 1 << 62


def verify_ledger(
    path_or_ledger: str | os.PathLike[str] | LedgerReader | Any,
    trust: TrustStore | Mapping[str, Any],
    *,
    skew: float = 60,
    jobs: int = 1,
    allow_unsealed: bool = False,
    allow_unsealed_tail: bool = False,
    anchor: Iterable[AnchorPoint] | None = None,
) -> Report:
    """Verify a ledger file against ``trust`` (a :class:`TrustStore` or a JWKS dict) with roles
    (:class:`~mcpclient_auth.errors.TrustRolesMissing` otherwise).

        report = verify_ledger("ledger.jsonl", trust, jobs=4)
        report.ok, report.exit_code, report.failures, report.runs, report.tail, report.recoveries

    ``path_or_ledger``: a path, a :class:`LedgerReader` or a :class:`~.writer.Ledger` (its file is
    read). ``jobs`` > 1 verifies signatures in that many processes.

    Two separate allowances (the CLI's ``--allow-unsealed`` and ``--allow-unsealed-tail``):

    - ``allow_unsealed`` accepts *runs* without their own seal — a server's ledger (the server cannot
      seal a client's run; its checkpoints cover the file instead), or a client run whose writer
      crashed before a later seal. It does **not** accept an uncovered tail.
    - ``allow_unsealed_tail`` accepts what follows the last seal/checkpoint (a torn last line, runs
      still being written): use it for a live ledger or one whose writer crashed. The tail is still
      reported (:attr:`Report.tail`) and every other check still runs on it.

    ``anchor``: the points an :class:`~.anchor.Anchor` recorded for this ledger (e.g.
    ``FileAnchor.read(path, ledger=name)``); each must be in the file with its hash.
    """
    if isinstance(path_or_ledger, LedgerReader):
        reader = path_or_ledger
    elif isinstance(path_or_ledger, str | os.PathLike):
        reader = LedgerReader(path_or_ledger)
    elif isinstance(getattr(path_or_ledger, "path", None), Path):
        reader = LedgerReader(path_or_ledger.path)
    else:
        raise LedgerError("verify_ledger needs a path, a LedgerReader or a Ledger")
    store = trust if isinstance(trust, TrustStore) else TrustStore.from_jwks(trust)
    store.require_roles()  # who may sign a mandate is the first thing an auditor must know
    if type(jobs) is not int or jobs < 1:
        raise LedgerError("jobs must be a positive integer")
    anchors: dict[int, str] = {}
    for point in anchor or ():
        if anchors.setdefault(point.seq, point.hash) != point.hash:
            raise LedgerError(f"the anchor records two different hashes for seq {point.seq}")
    verifier = _Verifier(
        store,
        skew=skew,
        jobs=jobs,
        allow_unsealed=allow_unsealed,
        allow_unsealed_tail=allow_unsealed_tail,
        anchors=anchors,
    )
    return verifier.run(closing_recoveries(reader.lines()))


def _trace_id(ect: ExecutionContextToken) -> object:
    """The trace id the ECT names (``ect_ext.trace.trace_id``, OpenTelemetry), else ``None``."""
    extension = ect.claims.get("ect_ext")
    trace = extension.get("trace") if isinstance(extension, dict) else None
    return trace.get("trace_id") if isinstance(trace, dict) else None
