"""``RunJournal``: every ledger entry a run writes, and the exactly-once outcome of each call.

A run's ledger lines come from several places — the request hook (``ect``, ``denial``), the response
tracker (``response``), a failed transport (``error``), the 401/403 handling (``response`` +
``denial``) and :meth:`~mcpclient_auth.run.AgentRun.close` (``incomplete`` errors, ``record``,
``seal``). They all go through one :class:`RunJournal`, which also owns the table of calls in flight
and the claim that lets exactly one outcome entry (``response`` or ``error``) be written per call,
whichever path reaches it first:

    journal.sent(inflight)                  # the ``ect`` entry; the call is now in flight
    journal.response(inflight, status=200, out_hash=h, nbytes=n, completed=True)
    journal.error(inflight, "transport_error", "ReadError")   # -> None: already answered

An answer may arrive on another stream than the request's (SSE resumption, SEP-1699: the server ends
the POST stream after a priming event and the client resumes with ``GET`` + ``Last-Event-ID``):
:meth:`RunJournal.expect_answer` files a call under its stream key (endpoint URL, MCP session id) and
JSON-RPC id, and :meth:`RunJournal.awaited` finds it when a response with that id arrives on a GET
stream of the same endpoint and session (a plain listening GET, where the client routes responses by
id); the ``response`` entry is then written with ``resumed: true`` and the hash of that JSON-RPC
message. A GET with ``Last-Event-ID`` resumes one call's stream — the client takes its first response
as that call's answer whatever its id — so :meth:`RunJournal.resume_from` files the call under the
event id its stream ended after, and :meth:`RunJournal.resumed_call` finds it by the GET's
``Last-Event-ID`` (never by the id of the message on the wire).

Writing is local file I/O only (the :class:`~mcpclient_auth.ledger.writer.Ledger`); the journal
makes no decision about a call, it records the ones made elsewhere.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _telemetry
from .errors import (
    InvalidTokenResponse,
    McpClientAuthError,
    MissingSubjectToken,
    NoTokenForPrincipal,
    RunClosed,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)

if TYPE_CHECKING:
    from ._calls import RunView
    from .act import ExecutionRecord, Mandate
    from .dag import Frontier
    from .jsonrpc import Call
    from .keys import Identity
    from .ledger.format import LedgerEntry
    from .ledger.writer import Ledger

__all__ = ["InFlight", "RunJournal", "StreamKey"]

#: Where an answer may arrive: the endpoint URL (without query) and the MCP session id (if any).
StreamKey = tuple[str, str | None]
#: A call filed for its answer: the stream key, and its JSON-RPC id with the id's type (1 is not "1").
_AnswerKey = tuple[StreamKey, bool, str | int]
#: A call's resumable stream: the stream key and the event id a client resumes from.
_ResumeKey = tuple[StreamKey, str]

#: Failures to obtain the user's token: recorded as ``error`` entries, not ``denial`` (see
#: :meth:`RunJournal.denial`).
_TOKEN_UNAVAILABLE = (
    MissingSubjectToken,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
    InvalidTokenResponse,
    NoTokenForPrincipal,
)


@dataclass(slots=True, eq=False)
class InFlight:
    """One signed request of a run, from its request hook to the end of its response."""

    run: RunView
    call: Call | None
    action: str | None
    jti: str | None
    pred: list[str]
    url: str
    token: str | None = field(default=None, repr=False)
    #: the ``jti`` of this send's DPoP proof (RFC 9449), recorded in its ``ect`` entry
    dpop_jti: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    #: the call's OpenTelemetry span and clocks (``None`` when OpenTelemetry is off)
    telemetry: _telemetry.CallTelemetry | None = field(default=None, repr=False)

    @property
    def is_tool_call(self) -> bool:
        return self.call is not None and self.call.is_tool_call


class RunJournal:
    """The ledger writes of one run (``run_id``, acting for ``principal_id``).

    ``frontier`` is the run's DAG frontier: a tool call whose successful answer is journalled joins it.
    """

    def __init__(self, ledger: Ledger, *, run_id: str, principal_id: str, frontier: Frontier) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.principal_id = principal_id
        self.frontier = frontier
        self._lock = threading.Lock()
        self._inflight: dict[int, InFlight] = {}
        #: Calls whose answer may arrive on another stream (SSE resumption), by stream and id.
        self._awaited: dict[_AnswerKey, InFlight] = {}
        self._awaited_keys: dict[int, _AnswerKey] = {}
        #: Calls whose stream ended resumably, by (stream, last event id); ``None`` when two calls
        #: claimed one event id (a GET resuming from it belongs to neither: nothing is credited).
        self._resumable: dict[_ResumeKey, InFlight | None] = {}
        self._resumable_keys: dict[int, list[_ResumeKey]] = {}
        self._closed = False
        self._last_action: str | None = None

    def __repr__(self) -> str:
        return f"RunJournal(run={self.run_id!r}, in_flight={len(self._inflight)}, closed={self._closed})"

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` ran: no further call may be journalled as sent."""
        return self._closed

    @property
    def last_action(self) -> str | None:
        """The action of the last tool call that completed successfully (the record's ``exec_act``)."""
        return self._last_action

    # --- entries ----------------------------------------------------------------------------------

    def mandate(self, mandate: Mandate, *, endpoints: list[str], agent_kid: str) -> LedgerEntry:
        """The run's first entry: its mandate."""
        return self.ledger.append(
            run=self.run_id,
            kind="mandate",
            jti=mandate.jti,
            token=mandate.token,
            meta={"principal": self.principal_id, "endpoints": endpoints, "agent": agent_kid},
        )

    def denial(self, call: Call | None, action: str | None, exc: McpClientAuthError) -> LedgerEntry:
        """Record a refused call: a ``denial`` when someone decided (the mandate, the principal
        binding, the MCP server), an ``error`` when what the call needs could not be had (the
        identity provider failed or had no token for the user)."""
        meta: dict[str, Any] = {
            "method": call.method if call else None,
            "tool": call.tool if call else None,
            "id": call.id if call else None,
            "action": action,
            "code": exc.code,
            "principal": self.principal_id,
        }
        kind = "error" if isinstance(exc, _TOKEN_UNAVAILABLE) else "denial"
        return self.ledger.append(run=self.run_id, kind=kind, meta=meta)

    def sent(self, inflight: InFlight) -> int:
        """The request was signed: write its ``ect`` entry (returns its ``seq``) and track the call
        until its response ends.

        Raises :class:`~mcpclient_auth.errors.RunClosed` (nothing written) once the run is closing.
        """
        call = inflight.call
        assert call is not None
        meta: dict[str, Any] = {
            "method": call.method,
            "id": call.id,
            "url": inflight.url,
            "action": inflight.action,
        }
        if call.tool is not None:
            meta["tool"] = call.tool
        if inflight.dpop_jti is not None:
            meta["dpop_jti"] = inflight.dpop_jti
        meta["principal"] = self.principal_id
        trace_id = inflight.telemetry.trace_id() if inflight.telemetry is not None else None
        if trace_id is not None:
            meta["trace"] = trace_id  # the auditor's way from this line to the call's trace
        with self._lock:
            if self._closed:
                raise RunClosed(f"run {self.run_id} closed while the call was being prepared")
            self._inflight[id(inflight)] = inflight
        return self.ledger.append_fresh(self.run_id, "ect", inflight.jti, inflight.token, meta)

    def claim(self, inflight: InFlight) -> bool:
        """Take the right to write the one outcome entry of ``inflight`` (False if already written)."""
        with self._lock:
            if inflight.finished:
                return False
            inflight.finished = True
            self._inflight.pop(id(inflight), None)
            key = self._awaited_keys.pop(id(inflight), None)
            if key is not None:
                self._awaited.pop(key, None)
            for resume_key in self._resumable_keys.pop(id(inflight), ()):
                if self._resumable.get(resume_key) is inflight:
                    del self._resumable[resume_key]
            return True

    def expect_answer(self, inflight: InFlight, stream: StreamKey) -> None:
        """File ``inflight`` (a JSON-RPC request whose answer streams as SSE) so that its answer is
        recognised on any stream of ``stream`` — its own POST stream, or a resumed GET."""
        call = inflight.call
        if call is None or call.id is None:
            return
        key: _AnswerKey = (stream, isinstance(call.id, str), call.id)
        with self._lock:
            if not inflight.finished:
                self._awaited[key] = inflight
                self._awaited_keys[id(inflight)] = key

    def awaited(self, stream: StreamKey, request_id: str | int) -> InFlight | None:
        """The unanswered call of ``stream`` with JSON-RPC id ``request_id``, if one is in flight."""
        with self._lock:
            return self._awaited.get((stream, isinstance(request_id, str), request_id))

    def resume_from(self, inflight: InFlight, stream: StreamKey, event_id: str) -> None:
        """``inflight``'s answer stream (on ``stream``) ended after event ``event_id``: a GET with
        ``Last-Event-ID: event_id`` resumes this call. An event id another unanswered call already
        claimed is ambiguous and resumes neither (fail closed: both stay unanswered)."""
        key: _ResumeKey = (stream, event_id)
        with self._lock:
            if inflight.finished:
                return
            if key in self._resumable and self._resumable[key] is not inflight:
                self._resumable[key] = None
                return
            self._resumable[key] = inflight
            self._resumable_keys.setdefault(id(inflight), []).append(key)

    def resumed_call(self, stream: StreamKey, event_id: str) -> InFlight | None:
        """The unanswered call a GET with ``Last-Event-ID: event_id`` on ``stream`` resumes, if any."""
        with self._lock:
            return self._resumable.get((stream, event_id))

    def response(
        self,
        inflight: InFlight,
        *,
        status: int,
        out_hash: str,
        nbytes: int,
        completed: bool,
        code: str | None = None,
        resumed: bool = False,
    ) -> int | None:
        """Write the ``response`` entry and return its ``seq`` (``None``: the call's outcome was
        already written); a tool
        call whose answer arrived with a 2xx status joins the frontier. ``code`` marks an answer
        that could not be inspected (``event_too_large``) or that never came on a stream that
        ended (``response_missing``); ``resumed``: the answer arrived on a resumed stream, and
        ``out_hash`` / ``nbytes`` are those of the JSON-RPC response message itself;
        ``answer_id_mismatch``: the first response on the call's stream carried another id — the
        client never got this call's answer (such a call does not join the frontier)."""
        if not self.claim(inflight):
            return None
        duration_ms = round((time.monotonic() - inflight.started) * 1000, 3)
        call = inflight.call
        meta: dict[str, Any] = {
            "status": status,
            "out_hash": out_hash,
            "duration_ms": duration_ms,
            "id": call.id if call else None,
            "bytes": nbytes,
        }
        if code is not None:
            meta["code"] = code
        if resumed:
            meta["resumed"] = True
        seq = self.ledger.append_fresh(self.run_id, "response", inflight.jti, None, meta)
        _telemetry.answered(inflight.telemetry, status, code)
        if completed and 200 <= status < 300 and inflight.is_tool_call and inflight.jti is not None:
            self.frontier.complete(inflight.jti, inflight.pred)
            self._last_action = inflight.action
        return seq

    def error(self, inflight: InFlight, code: str, message: str) -> LedgerEntry | None:
        """Write the ``error`` entry of a call that got no usable response (``None``: already written)."""
        if not self.claim(inflight):
            return None
        entry = self.ledger.append(
            run=self.run_id,
            kind="error",
            jti=inflight.jti,
            meta={"code": code, "jti": inflight.jti, "message": message},
        )
        _telemetry.failed(inflight.telemetry, code)
        return entry

    # --- closing ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Refuse further calls and write an ``incomplete`` error for each call still in flight."""
        with self._lock:
            self._closed = True
            leftovers = [item for item in self._inflight.values() if not item.finished]
            for item in leftovers:
                item.finished = True
            self._inflight.clear()
            self._awaited.clear()
            self._awaited_keys.clear()
            self._resumable.clear()
            self._resumable_keys.clear()
        for item in leftovers:
            self.ledger.append(
                run=self.run_id,
                kind="error",
                jti=item.jti,
                meta={
                    "code": "incomplete",
                    "jti": item.jti,
                    "message": "no complete response before the run closed",
                },
            )
            _telemetry.failed(item.telemetry, "incomplete", final=True)

    def record(self, record: ExecutionRecord, *, agent: Identity) -> LedgerEntry:
        """Write the phase-2 record, then seal the run's entries with ``agent``'s key."""
        meta: dict[str, Any] = {"status": record.status, "out_hash": record.out_hash}
        if record.exec_act is not None:
            meta["exec_act"] = record.exec_act
        self.ledger.append(run=self.run_id, kind="record", jti=record.jti, token=record.token, meta=meta)
        return self.ledger.seal(self.run_id, agent)
