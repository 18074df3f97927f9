"""Reading ledgers: streaming, constant memory, never crashing on garbage.

    reader = Ledger.open("ledger.jsonl")          # or LedgerReader("ledger.jsonl")
    for entry in reader.entries(kind="ect"):
        print(entry.seq, entry.meta.get("tool"))
    reader.problems                               # malformed lines met by entries(), in order
    reader.torn_tail()                            # TornTail(offset, length, hash) or None
    for run in reader.runs():                     # one RunSummary per run, in order of appearance
        print(run.run, run.purpose, run.calls, run.status)

:meth:`LedgerReader.lines` is the low-level view every other tool builds on: each physical line with
its bytes, its hash (the next line's ``prev``), whether it ended with a newline, and either the
parsed entry or why it did not parse. A line without a trailing newline can only be the last one: a
*torn* tail, left by a writer that died mid-write.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from .._encoding import b64url_encode
from ..errors import LedgerError, LedgerFormatError, McpClientAuthError
from ..policy import McpActionPolicy
from .format import MAX_LINE_BYTES, NO_RUN, RECOVERY_CODE, LedgerEntry, line_hash, parse_line

__all__ = [
    "LedgerReader",
    "LineProblem",
    "RawLine",
    "RunSummary",
    "TornTail",
    "is_tool_call",
    "summarize",
]

#: How many problems :meth:`LedgerReader.entries` keeps (the count is always exact).
MAX_PROBLEMS = 1000
_READ_LIMIT = MAX_LINE_BYTES + 1
_TAIL_PROBE = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawLine:
    """One physical line. ``data`` excludes the newline (and is empty for an oversize line, whose
    bytes are hashed but not kept)."""

    number: int
    offset: int
    length: int
    data: bytes = field(repr=False)  # holds a token: evidence, but long and not for logs
    hash: str
    terminated: bool
    entry: LedgerEntry | None
    error: str | None

    @property
    def recovery_of(self) -> str | None:
        """For a recovery record: the hash of the torn line it closes."""
        if self.entry is not None and self.entry.is_recovery:
            value = self.entry.meta.get("torn_hash")
            return value if isinstance(value, str) else None
        return None


#: The error of a complete-looking line a writer closed with a recovery record: torn bytes.
CLOSED_BY_RECOVERY = "torn bytes closed by a recovery record"


def closing_recoveries(lines: Iterable[RawLine]) -> Iterator[RawLine]:
    """``lines`` with every line that the next line's recovery record closes turned into torn bytes
    (``entry`` ``None``, ``error`` :data:`CLOSED_BY_RECOVERY`).

    A writer only recovers a tail that was torn (no newline) or unreadable, so a parsable line followed
    by a recovery of its hash was written without its newline: whatever it says, it is a write that did
    not finish (or bytes someone put there to be "repaired"), never an entry to count or show.
    """
    held: RawLine | None = None
    for line in lines:
        if held is not None:
            if held.entry is not None and line.recovery_of == held.hash:
                held = replace(held, entry=None, error=CLOSED_BY_RECOVERY)
            yield held
        held = line
    if held is not None:
        yield held


@dataclass(frozen=True, slots=True)
class TornTail:
    """A last line without its newline: a write that did not finish."""

    offset: int
    length: int
    hash: str
    number: int | None = None


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line that is not a valid entry. ``recovered``: a writer closed it with a recovery record."""

    number: int
    offset: int
    reason: str
    torn: bool = False
    recovered: bool = False


@dataclass(slots=True)
class RunSummary:
    """What one run did, from its entries (``verified`` is filled in by the verifier)."""

    run: str
    purpose: str | None = None
    principal: str | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    entries: int = 0
    calls: int = 0
    session_calls: int = 0
    responses: int = 0
    denials: int = 0
    errors: int = 0
    status: str = "open"
    sealed: bool = False
    verified: bool | None = None
    tools: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "purpose": self.purpose,
            "principal": self.principal,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "entries": self.entries,
            "calls": self.calls,
            "session_calls": self.session_calls,
            "responses": self.responses,
            "denials": self.denials,
            "errors": self.errors,
            "status": self.status,
            "sealed": self.sealed,
            "verified": self.verified,
            "tools": dict(self.tools),
        }


def is_tool_call(entry: LedgerEntry) -> bool:
    """An ``ect`` entry for a ``tools/call`` (as opposed to a session-level call), from its meta."""
    action = entry.meta.get("action")
    if isinstance(action, str):
        return not action.startswith(McpActionPolicy.SESSION_PREFIX)
    return entry.meta.get("method") == "tools/call"


def unverified_claims(token: str | None) -> dict[str, Any]:
    """Unverified claims of a compact JWS (display only; the verifier checks signatures)."""
    if not token:
        return {}
    from .. import jose

    try:
        return jose.decode(token).claims
    except McpClientAuthError:
        return {}


def summarize(summary: RunSummary, entry: LedgerEntry, *, claims: dict[str, Any] | None = None) -> None:
    """Fold ``entry`` into ``summary`` (the summary is per run; memory stays constant).

    ``claims``: the claims of the entry's token when the caller has already parsed it (the verifier
    does), so a mandate or record is not decoded a second time for its purpose or status."""
    summary.entries += 1
    summary.first_ts = summary.first_ts or entry.ts
    summary.last_ts = entry.ts
    meta = entry.meta
    principal = meta.get("principal")
    if summary.principal is None and isinstance(principal, str):
        summary.principal = principal
    kind = entry.kind
    if kind == "mandate":
        task = (claims if claims is not None else unverified_claims(entry.token)).get("task")
        purpose = task.get("purpose") if isinstance(task, dict) else None
        if isinstance(purpose, str):
            summary.purpose = purpose
    elif kind == "ect":
        if is_tool_call(entry):
            summary.calls += 1
            tool = meta.get("tool")
            if isinstance(tool, str):
                summary.tools[tool] = summary.tools.get(tool, 0) + 1
        else:
            summary.session_calls += 1
    elif kind == "response":
        summary.responses += 1
    elif kind == "denial":
        summary.denials += 1
    elif kind == "error":
        summary.errors += 1
    elif kind == "record":
        if claims is None:
            claims = unverified_claims(entry.token)
        status = claims.get("status", meta.get("status"))
        summary.status = status if isinstance(status, str) else "recorded"
    elif kind == "seal":
        summary.sealed = True


def _oversize(stream: IO[bytes], number: int, offset: int, first: bytes) -> RawLine:
    """Hash a line longer than :data:`MAX_LINE_BYTES` without keeping it."""
    digest = hashlib.sha256(first)
    length = len(first)
    terminated = False
    while True:
        raw = stream.readline(_READ_LIMIT)
        if not raw:
            break
        if raw.endswith(b"\n"):
            digest.update(raw[:-1])
            length += len(raw) - 1
            terminated = True
            break
        digest.update(raw)
        length += len(raw)
    reason = f"the line is longer than {MAX_LINE_BYTES} bytes"
    return RawLine(number, offset, length, b"", b64url_encode(digest.digest()), terminated, None, reason)


class LedgerReader:
    """Streaming access to a ledger file. Every method re-reads the file from the start; nothing
    is held in memory between lines except per-run summaries."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        #: Malformed lines met by the last :meth:`entries` pass (at most :data:`MAX_PROBLEMS`).
        self.problems: list[LineProblem] = []
        #: How many malformed lines the last :meth:`entries` pass met.
        self.problem_count = 0
        #: The torn last line met by the last :meth:`entries` pass.
        self.torn: TornTail | None = None

    def _open(self) -> IO[bytes]:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise LedgerError(f"cannot read ledger {os.fspath(self.path)!r}: {exc.strerror}") from None

    def lines(self) -> Iterator[RawLine]:
        """Every physical line, parsed where possible. Constant memory (lines are bounded)."""
        with self._open() as stream:
            number = 0
            offset = 0
            while True:
                raw = stream.readline(_READ_LIMIT)
                if not raw:
                    return
                number += 1
                terminated = raw.endswith(b"\n")
                if not terminated and len(raw) == _READ_LIMIT:
                    line = _oversize(stream, number, offset, raw)
                    yield line
                    offset += line.length + line.terminated
                    continue
                data = raw[:-1] if terminated else raw
                entry: LedgerEntry | None
                try:
                    entry, error = parse_line(data), None
                except LedgerFormatError as exc:
                    entry, error = None, exc.message
                yield RawLine(number, offset, len(data), data, line_hash(data), terminated, entry, error)
                offset += len(raw)

    def entries(self, *, run: str | None = None, kind: str | None = None) -> Iterator[LedgerEntry]:
        """Valid entries in file order, optionally of one run and/or kind. Malformed lines are
        skipped and recorded in :attr:`problems`; a torn tail in :attr:`torn`."""
        self.problems, self.problem_count, self.torn = [], 0, None
        pending: tuple[RawLine, str] | None = None
        for line in closing_recoveries(self.lines()):
            if pending is not None:
                bad, reason = pending
                self._problem(bad, reason, recovered=line.recovery_of == bad.hash)
                pending = None
            if not line.terminated:
                self.torn = TornTail(line.offset, line.length, line.hash, line.number)
                self._problem(line, "torn last line (no newline)", torn=True)
                continue
            if line.entry is None:
                pending = (line, line.error or "malformed")
                continue
            entry = line.entry
            if (run is None or entry.run == run) and (kind is None or entry.kind == kind):
                yield entry
        if pending is not None:
            self._problem(pending[0], pending[1], recovered=False)

    __iter__ = entries

    def _problem(self, line: RawLine, reason: str, *, torn: bool = False, recovered: bool = False) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(LineProblem(line.number, line.offset, reason, torn, recovered))

    def torn_tail(self) -> TornTail | None:
        """The torn last line, if the file does not end with a newline (reads only the end)."""
        with self._open() as stream:
            size = stream.seek(0, os.SEEK_END)
            if size == 0:
                return None
            stream.seek(size - 1)
            if stream.read(1) == b"\n":
                return None
            position = size
            start = 0
            while position > 0:
                low = max(0, position - _TAIL_PROBE)
                stream.seek(low)
                chunk = stream.read(position - low)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    start = low + newline + 1
                    break
                position = low
            digest = hashlib.sha256()
            stream.seek(start)
            remaining = size - start
            while remaining:
                chunk = stream.read(min(_TAIL_PROBE, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
            return TornTail(start, size - start, b64url_encode(digest.digest()))

    def runs(self) -> list[RunSummary]:
        """One summary per run, in order of first appearance (recovery records belong to none)."""
        summaries: dict[str, RunSummary] = {}
        for entry in self.entries():
            if entry.run == NO_RUN:
                continue
            summary = summaries.get(entry.run)
            if summary is None:
                summary = summaries[entry.run] = RunSummary(entry.run)
            summarize(summary, entry)
        return list(summaries.values())

    def recoveries(self) -> list[LedgerEntry]:
        """The recovery records in the file (``error`` entries with code ``ledger_recovered``)."""
        return [e for e in self.entries(kind="error") if e.meta.get("code") == RECOVERY_CODE]

    def __repr__(self) -> str:
        return f"LedgerReader({os.fspath(self.path)!r})"
