"""The ledger writer: one hash-chained JSONL file shared by threads, tasks and processes.

    with Ledger("ledger.jsonl") as ledger:                    # file created 0600
        ledger.append(run=mandate.jti, kind="mandate", jti=mandate.jti, token=mandate.token)
        ledger.append(run=mandate.jti, kind="ect", jti=ect.jti, token=ect.token,
                      meta={"method": "tools/call", "tool": "search", "id": 3})
        ledger.seal(mandate.jti, agent)                        # JWS over {run, count, last, seq, ts, iat}

    Ledger("server.jsonl", key=server_key).checkpoint()       # a server's signed checkpoint

How lines stay whole and chained when several writers share a file:

- the file is opened ``O_APPEND`` and every append is **one** ``os.write()`` of one whole line
  (bytes + ``\\n``), made while holding an exclusive advisory ``flock`` (and, inside one process, a
  ``threading.Lock``, because ``flock`` does not exclude threads sharing a file description);
- ``seq`` and ``prev`` continue from the file's real last line. The writer caches (size, last line
  hash, seq) and re-reads the tail only when ``fstat`` shows that another writer appended, so the
  common case costs one ``fstat`` and no read;
- a torn last line (no newline: a writer died mid-write, the disk filled up) or an unparsable one is
  terminated and followed by an ``error`` entry ``{"code": "ledger_recovered", "torn_bytes",
  "torn_hash"}`` whose ``prev`` is the torn bytes' hash, so the chain stays continuous and the
  verifier reports a recovery instead of a broken chain. The record states only what the writer can
  vouch for — how many bytes it found and their SHA-256 — and, when the writer has a ``key``, carries
  a JWS over those facts, its own ``seq``/``ts`` and the hash of the line before the torn one;
- the file is opened without following a symlink, and a pre-existing file open to group/others is
  set to 0600 (one owned by another user is refused), see :mod:`._files`;
- each seal and checkpoint hash goes to the ``anchor`` (:mod:`.anchor`), if one is given.

Durability modes (:data:`DURABILITY`): lines are never buffered in user space — a buffered half line
could interleave with another writer's — so every mode hands each line to the OS at once and a
process crash loses nothing. ``none`` never syncs; ``flush`` (default) also syncs the file to disk
after each seal and on :meth:`Ledger.close`, so a sealed run survives a power cut; ``fsync`` syncs
after every line.

Appends are synchronous and fast (tens of microseconds): call them from async hooks directly.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _telemetry
from .._encoding import b64url_encode
from ..errors import ConfigurationError, LedgerAnchorError, LedgerError, LedgerFormatError
from ._files import open_private
from .anchor import Anchor, AnchorPoint
from .format import (
    CHECKPOINT_TYP,
    GENESIS_PREV,
    KINDS,
    LEDGER_VERSION,
    MAX_LINE_BYTES,
    NO_RUN,
    RECOVERY_CODE,
    RECOVERY_TYP,
    LedgerEntry,
    encode_fields,
    encode_line,
    line_hash,
    parse_line,
)

if sys.platform != "win32":
    import fcntl  # POSIX advisory locks; the writer refuses to run without them

if TYPE_CHECKING:
    from ..keys import Identity
    from .reader import LedgerReader

__all__ = ["DURABILITY", "Durability", "Ledger", "LedgerSection"]

_CHUNK = 64 * 1024
#: How far back a writer looks for the last parsable line after a torn tail before it falls back
#: to scanning the whole file (only ever on a damaged file).
_TAIL_SEARCH_BYTES = 4 * MAX_LINE_BYTES


@dataclass(frozen=True, slots=True)
class Durability:
    """When the writer asks the OS to put the file on disk."""

    name: str
    sync_each_append: bool
    sync_on_seal: bool


#: The durability modes by name.
DURABILITY: dict[str, Durability] = {
    "none": Durability("none", sync_each_append=False, sync_on_seal=False),
    "flush": Durability("flush", sync_each_append=False, sync_on_seal=True),
    "fsync": Durability("fsync", sync_each_append=True, sync_on_seal=True),
}

_APPEND_KINDS = frozenset(KINDS) - {"seal", "checkpoint"}

_SEEK_END = os.SEEK_END
_sync = getattr(os, "fdatasync", os.fsync)


class _Timestamps:
    """``format_ts(time.time())`` without a ``strftime`` per line: the seconds part is cached."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micros:06d}Z"



def _refuse_append(kind: str, run: object) -> None:
    """The checks :meth:`Ledger.append` and :meth:`Ledger.append_fresh` make before writing."""
    if kind not in _APPEND_KINDS:
        hint = "; use Ledger.seal()" if kind == "seal" else ""
        raise LedgerFormatError(f"cannot append an entry of kind {kind!r}{hint}")
    if not isinstance(run, str):
        raise LedgerFormatError("'run' must be a string")

class Ledger:
    """An append-only, hash-chained ledger file (format v1, see :mod:`.format`).

        ledger = Ledger("ledger.jsonl", durability="flush")
        entry = ledger.append(run=run_id, kind="denial", meta={"code": "mandate_denied"})
        entry.seq, entry.prev
        ledger.close()

    Thread-safe and multi-process safe; ``seal`` counts only the entries *this* writer appended for
    the run, so a run's entries must all be written through one ``Ledger`` object.

    ``key`` signs the writer's own ledger-level lines: recovery records and checkpoints
    (an agent's key for a client ledger, the server's key for a server ledger). ``anchor`` receives
    every seal and checkpoint hash, under ``anchor_name`` (default: the file's absolute path).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "flush",
        key: Identity | None = None,
        anchor: Anchor | None = None,
        anchor_name: str | None = None,
    ) -> None:
        try:
            self._durability = DURABILITY[durability]
        except (KeyError, TypeError):
            raise ConfigurationError(
                f"unknown ledger durability {durability!r}; use one of {', '.join(DURABILITY)}"
            ) from None
        self._path = Path(path)
        self._key = key
        self._anchor = anchor
        self.anchor_name = anchor_name if anchor_name is not None else os.path.abspath(self._path)
        self._lock = threading.Lock()
        self._stamps = _Timestamps()
        self._counts: dict[str, int] = {}
        self._size = -1  # unknown: the next locked section reads the tail
        self._seq = 0
        self._last = GENESIS_PREV
        self._closed = False
        #: Recovery entries this writer appended after finding a torn last line.
        self.recoveries: list[LedgerEntry] = []
        self._fd = self._open()
        self._pid = os.getpid()
        # Read the tail (and repair a torn one) now, so problems surface at open, not at first use.
        with self._locked():
            pass

    # --- public API -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LedgerReader:
        """A reader over an existing ledger file (see :class:`~.reader.LedgerReader`)."""
        from .reader import LedgerReader

        return LedgerReader(path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def durability(self) -> str:
        return self._durability.name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def seq(self) -> int:
        """The ``seq`` of the last line this writer knows of (0 for an empty file)."""
        return self._seq

    def append(
        self,
        *,
        run: str,
        kind: str,
        jti: str | None = None,
        token: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Append one entry and return it (with its ``seq``, ``ts`` and ``prev``).

        ``kind`` is one of :data:`~.format.KINDS` except ``seal`` (use :meth:`seal`). ``token`` is a
        signed ACT/ECT/record — never an access token or any other secret.
        """
        _refuse_append(kind, run)
        body = dict(meta) if meta is not None else {}
        seq, ts, prev = self._append_line(run, kind, jti, token, body)
        return LedgerEntry(LEDGER_VERSION, seq, ts, run, kind, jti, token, body, prev)

    def append_fresh(
        self, run: str, kind: str, jti: str | None, token: str | None, meta: dict[str, Any]
    ) -> int:
        """:meth:`append` for a caller that built ``meta`` for this one line and hands it over: it is
        neither copied nor returned, and no :class:`~.format.LedgerEntry` is built; returns the line's
        ``seq``. Same checks, bytes, locking and durability as :meth:`append` (one implementation,
        :meth:`_append_line`) — this is the request path's writer
        (:class:`~mcpclient_auth._journal.RunJournal`: two lines per MCP call).
        """
        _refuse_append(kind, run)
        return self._append_line(run, kind, jti, token, meta)[0]

    def _append_line(
        self, run: str, kind: str, jti: str | None, token: str | None, meta: dict[str, Any]
    ) -> tuple[int, str, str]:
        """Write one checked entry: ``(seq, ts, prev)``. The body of :meth:`_locked`, inlined — this
        is the per-request hot path of both :meth:`append` and :meth:`append_fresh`."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise LedgerError("the ledger is closed")
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                # The file's size (fstat's st_size) without building a stat_result: the ledger is a
                # regular file (checked at open), written O_APPEND and read with pread only, so the
                # offset lseek moves is never used.
                size = os.lseek(fd, 0, _SEEK_END)
                if size != self._size:
                    self._load_tail(size)
                return self._write_entry(run, kind, jti, token, meta)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def seal(self, run: str, identity: Identity) -> LedgerEntry:
        """Close ``run`` with a ``seal`` entry: a JWS (typ ``ledger-seal+jwt``) by ``identity`` over
        ``{"run", "count", "last", "seq", "ts", "iat"}`` where ``count`` is the number of entries this
        writer appended for the run, ``last`` is the seal line's own ``prev`` (the hash of the line
        before it) and ``seq``/``ts`` are the seal line's own — so no field of the line can be edited
        unseen, even when it is the file's last. All are taken under the lock, so no other line can
        slip in between.
        """
        from .. import jose

        if not isinstance(run, str) or run == NO_RUN:
            raise LedgerFormatError("a seal needs a run id")
        with self._locked():
            count = self._counts.get(run, 0)
            seq, ts = self._seq + 1, self._stamps.now()
            claims = {
                "run": run,
                "count": count,
                "last": self._last,
                "seq": seq,
                "ts": ts,
                "iat": int(time.time()),
            }
            token = jose.encode(identity, jose.SEAL_TYP, claims)
            entry = self._append_locked(run, "seal", None, token, {"count": count}, ts=ts)
            # A sealed run takes no more entries: its counter is no longer needed.
            self._counts.pop(run, None)
            if self._durability.sync_on_seal and not self._durability.sync_each_append:
                _sync(self._fd)
            point = self._anchor_point(entry)
        self._send_anchor(point)
        return entry

    def checkpoint(self, identity: Identity | None = None) -> LedgerEntry:
        """Append a ``checkpoint``: a JWS (typ ``ledger-checkpoint+jwt``) by ``identity`` (default:
        the writer's ``key``) over ``{"seq", "ts", "last", "iat"}`` — the line's own ``seq`` and
        ``ts`` and the hash of the line before it, which through the chain covers every line before.
        Servers write one every N entries and on shutdown (:mod:`mcpclient_auth.server`).
        """
        from .. import jose

        signer = identity if identity is not None else self._key
        if signer is None:
            raise ConfigurationError("a checkpoint needs a key: Ledger(path, key=...) or checkpoint(key)")
        with self._locked():
            seq, ts = self._seq + 1, self._stamps.now()
            claims = {"seq": seq, "ts": ts, "last": self._last, "iat": int(time.time())}
            token = jose.encode(signer, CHECKPOINT_TYP, claims)
            entry = self._append_locked(NO_RUN, "checkpoint", None, token, {}, ts=ts)
            if self._durability.sync_on_seal and not self._durability.sync_each_append:
                _sync(self._fd)
            point = self._anchor_point(entry)
        self._send_anchor(point)
        return entry

    @contextmanager
    def exclusive(self) -> Iterator[LedgerSection]:
        """Hold the ledger's locks (thread and ``flock``) across several steps: nothing another
        thread or process appends can land between them. For read-then-append decisions such as a
        server filing each run's mandate once per file (:mod:`mcpclient_auth.server._audit`).

            with ledger.exclusive() as section:
                new = section.read(known_size, section.size)   # what others appended meanwhile
                section.append(run=..., kind="mandate", ...)
        """
        with self._locked():
            yield LedgerSection(self)

    def _anchor_point(self, entry: LedgerEntry) -> AnchorPoint | None:
        if self._anchor is None:
            return None
        return AnchorPoint(self.anchor_name, entry.seq, self._last, entry.ts)

    def _send_anchor(self, point: AnchorPoint | None) -> None:
        if point is None or self._anchor is None:
            return
        try:
            self._anchor.anchor(point)
        except LedgerAnchorError:
            raise
        except Exception as exc:  # any anchor implementation: one typed error for the caller
            raise LedgerAnchorError(
                f"the anchor did not record seq {point.seq} ({type(exc).__name__})"
            ) from None

    def count(self, run: str) -> int:
        """Entries this writer appended for ``run`` since it was opened (or since the run's seal)."""
        return self._counts.get(run, 0)

    def close(self) -> None:
        """Sync (``flush``/``fsync`` modes) and close the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._durability.sync_on_seal and self._pid == os.getpid():
                    _sync(self._fd)
            finally:
                os.close(self._fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({os.fspath(self._path)!r}, durability={self._durability.name!r})"

    # --- file handling ----------------------------------------------------------------------------

    def _open(self) -> int:
        if sys.platform == "win32":
            raise LedgerError("the ledger writer needs POSIX advisory file locks (flock)")
        return open_private(self._path, os.O_RDWR | os.O_APPEND)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise LedgerError("the ledger is closed")
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._sync_tail()
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _after_fork(self) -> None:
        # A forked child shares the parent's open file description and with it the flock: two
        # processes would "hold" the same lock. Give the child its own description and lock.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._size = -1
        if not self._closed:
            old = self._fd
            self._fd = self._open()
            os.close(old)

    def _append_locked(
        self,
        run: str,
        kind: str,
        jti: str | None,
        token: str | None,
        meta: dict[str, Any],
        *,
        ts: str | None = None,
    ) -> LedgerEntry:
        seq, ts, prev = self._write_entry(run, kind, jti, token, meta, ts)
        return LedgerEntry(LEDGER_VERSION, seq, ts, run, kind, jti, token, meta, prev)

    def _write_entry(
        self,
        run: str,
        kind: str,
        jti: str | None,
        token: str | None,
        meta: dict[str, Any],
        ts: str | None = None,
    ) -> tuple[int, str, str]:
        """Encode and write one line (locks held); its ``(seq, ts, prev)``."""
        seq, prev = self._seq + 1, self._last
        if ts is None:
            ts = self._stamps.now()
        line = encode_fields(LEDGER_VERSION, seq, ts, run, kind, jti, token, meta, prev)
        if len(line) > MAX_LINE_BYTES:
            raise LedgerFormatError(f"the entry is larger than {MAX_LINE_BYTES} bytes")
        self._write(line + b"\n")
        self._seq = seq
        self._last = line_hash(line)
        if run != NO_RUN:
            counts = self._counts
            counts[run] = counts.get(run, 0) + 1
        _telemetry.ledger_appended(kind)
        return seq, ts, prev

    def _write(self, data: bytes) -> None:
        fd = self._fd
        try:
            written = os.write(fd, data)
            if written != len(data):
                # A short write (a signal, a filling disk): finish it, still under the lock, so
                # nothing interleaves.
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(fd, view) :]
            if self._durability.sync_each_append:
                _sync(fd)
        except OSError as exc:
            self._size = -1  # whatever reached the file, the next append re-reads (and repairs) it
            raise LedgerError(f"cannot append to ledger {os.fspath(self._path)!r}: {exc.strerror}") from None
        self._size += len(data)

    # --- tail handling ----------------------------------------------------------------------------

    def _sync_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size != self._size:
            self._load_tail(size)

    def _load_tail(self, size: int) -> None:
        if size == 0:
            self._size, self._seq, self._last = 0, 0, GENESIS_PREV
            return
        start, end, terminated = _last_line_bounds(self._fd, size)
        entry: LedgerEntry | None = None
        if end - start <= MAX_LINE_BYTES:
            line = os.pread(self._fd, end - start, start)
            try:
                entry = parse_line(line)
            except LedgerFormatError:
                entry = None
            tail_hash = line_hash(line)
        else:
            tail_hash = _hash_range(self._fd, start, end)
        self._size = size
        if entry is not None and terminated:
            self._seq, self._last = entry.seq, tail_hash
            return
        # Torn (no newline) or unreadable: close it and record the recovery.
        last_good = entry.seq if entry is not None else _last_good_seq(self._fd, start)
        self._recover(end - start, tail_hash, last_good, terminated, _hash_of_line_before(self._fd, start))

    def _recover(
        self, torn_bytes: int, torn_hash: str, last_good_seq: int, terminated: bool, before: str
    ) -> None:
        from .. import jose

        seq, ts = last_good_seq + 1, self._stamps.now()
        # Only what this writer can vouch for: how many bytes it found, and their hash.
        meta = {"code": RECOVERY_CODE, "torn_bytes": torn_bytes, "torn_hash": torn_hash}
        token = None
        if self._key is not None:
            claims = {
                "seq": seq,
                "ts": ts,
                "torn_bytes": torn_bytes,
                "torn_hash": torn_hash,
                "before": before,
                "iat": int(time.time()),
            }
            token = jose.encode(self._key, RECOVERY_TYP, claims)
        entry = LedgerEntry(LEDGER_VERSION, seq, ts, NO_RUN, "error", None, token, meta, torn_hash)
        line = encode_line(entry)
        # Terminating the torn line and the recovery record go out in one write.
        self._write((b"" if terminated else b"\n") + line + b"\n")
        self._seq, self._last = entry.seq, line_hash(line)
        self.recoveries.append(entry)


class LedgerSection:
    """The ledger while :meth:`Ledger.exclusive` holds its locks (valid only inside that block)."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @property
    def size(self) -> int:
        """The file's size in bytes: every line in it is complete (a torn tail was recovered)."""
        return self._ledger._size

    @property
    def seq(self) -> int:
        return self._ledger._seq

    def read(self, start: int, end: int) -> bytes:
        """The file's bytes ``[start, end)``."""
        if not 0 <= start <= end:
            raise LedgerError("read() needs 0 <= start <= end")
        return os.pread(self._ledger._fd, end - start, start)

    def append(
        self,
        *,
        run: str,
        kind: str,
        jti: str | None = None,
        token: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """:meth:`Ledger.append`, inside the held locks."""
        if kind not in _APPEND_KINDS:
            raise LedgerFormatError(f"cannot append an entry of kind {kind!r}")
        if not isinstance(run, str):
            raise LedgerFormatError("'run' must be a string")
        return self._ledger._append_locked(run, kind, jti, token, dict(meta) if meta is not None else {})


def _hash_of_line_before(fd: int, start: int) -> str:
    """The hash of the line that ends just before offset ``start`` (genesis when there is none)."""
    if start == 0:
        return GENESIS_PREV
    line_start, line_end, _ = _last_line_bounds(fd, start)
    if line_end - line_start <= MAX_LINE_BYTES:
        return line_hash(os.pread(fd, line_end - line_start, line_start))
    return _hash_range(fd, line_start, line_end)


def _last_line_bounds(fd: int, size: int) -> tuple[int, int, bool]:
    """(start, end, terminated) of the file's last line, ``end`` excluding the newline."""
    terminated = os.pread(fd, 1, size - 1) == b"\n"
    end = size - 1 if terminated else size
    position = end
    while position > 0:
        low = max(0, position - _CHUNK)
        chunk = os.pread(fd, position - low, low)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return low + newline + 1, end, terminated
        position = low
    return 0, end, terminated


def _hash_range(fd: int, start: int, end: int) -> str:
    digest = hashlib.sha256()
    while start < end:
        chunk = os.pread(fd, min(_CHUNK, end - start), start)
        if not chunk:
            break
        digest.update(chunk)
        start += len(chunk)
    return b64url_encode(digest.digest())


def _last_good_seq(fd: int, before: int) -> int:
    """The ``seq`` of the last parsable line that ends before offset ``before`` (0 if none)."""
    low = max(0, before - _TAIL_SEARCH_BYTES)
    window = os.pread(fd, before - low, low)
    lines = window.split(b"\n")
    if low > 0:
        lines = lines[1:]  # the first piece may be the middle of a line
    for line in reversed(lines):
        if not line:
            continue
        try:
            return parse_line(line).seq
        except LedgerFormatError:
            continue
    if low == 0:
        return 0
    # A damaged stretch longer than the window: read the whole file once, forward.
    last = 0
    with os.fdopen(os.dup(fd), "rb") as stream:
        stream.seek(0)
        consumed = 0
        for raw in stream:
            consumed += len(raw)
            if consumed > before:
                break
            try:
                last = parse_line(raw.rstrip(b"\n")).seq
            except LedgerFormatError:
                continue
    return last
