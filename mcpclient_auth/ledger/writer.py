"""The ledger writer: one hash-chained JSONL file shared by threads, tasks and processes.

    with Ledger("ledger.jsonl") as ledger:                    # file created 0600
        ledger.append(run=mandate.jti, kind="mandate", jti=mandate.jti, token=mandate.token)
        ledger.append(run=mandate.jti, kind="ect", jti=ect.jti, token=ect.token,
                      meta={"method": "tools/call", "tool": "search", "id": 3})
        ledger.seal(mandate.jti, agent)                        # JWS over {run, count, last, iat}

How lines stay whole and chained when several writers share a file:

- the file is opened ``O_APPEND`` and every append is **one** ``os.write()`` of one whole line
  (bytes + ``\\n``), made while holding an exclusive advisory ``flock`` (and, inside one process, a
  ``threading.Lock``, because ``flock`` does not exclude threads sharing a file description);
- ``seq`` and ``prev`` continue from the file's real last line. The writer caches (size, last line
  hash, seq) and re-reads the tail only when ``fstat`` shows that another writer appended, so the
  common case costs one ``fstat`` and no read;
- a torn last line (no newline: a writer died mid-write, the disk filled up) or an unparsable one is
  terminated and followed by an ``error`` entry ``{"code": "ledger_recovered", "torn_bytes",
  "torn_hash", "last_good_seq"}`` whose ``prev`` is the torn bytes' hash, so the chain stays
  continuous and the verifier reports a recovery instead of a broken chain.

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
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._encoding import b64url_encode
from ..errors import ConfigurationError, LedgerError, LedgerFormatError
from .format import (
    GENESIS_PREV,
    KINDS,
    LEDGER_VERSION,
    MAX_LINE_BYTES,
    NO_RUN,
    RECOVERY_CODE,
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

__all__ = ["DURABILITY", "Durability", "Ledger"]

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

_APPEND_KINDS = frozenset(KINDS) - {"seal"}
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


class Ledger:
    """An append-only, hash-chained ledger file (format v1, see :mod:`.format`).

        ledger = Ledger("ledger.jsonl", durability="flush")
        entry = ledger.append(run=run_id, kind="denial", meta={"code": "mandate_denied"})
        entry.seq, entry.prev
        ledger.close()

    Thread-safe and multi-process safe; ``seal`` counts only the entries *this* writer appended for
    the run, so a run's entries must all be written through one ``Ledger`` object.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "flush") -> None:
        try:
            self._durability = DURABILITY[durability]
        except (KeyError, TypeError):
            raise ConfigurationError(
                f"unknown ledger durability {durability!r}; use one of {', '.join(DURABILITY)}"
            ) from None
        self._path = Path(path)
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
        if kind not in _APPEND_KINDS:
            hint = "; use Ledger.seal()" if kind == "seal" else ""
            raise LedgerFormatError(f"cannot append an entry of kind {kind!r}{hint}")
        if not isinstance(run, str):
            raise LedgerFormatError("'run' must be a string")
        body = dict(meta) if meta is not None else {}
        # The body of _locked(), inlined: this is the per-request hot path.
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise LedgerError("the ledger is closed")
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size != self._size:
                    self._load_tail(os.fstat(fd).st_size)
                return self._append_locked(run, kind, jti, token, body)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def seal(self, run: str, identity: Identity) -> LedgerEntry:
        """Close ``run`` with a ``seal`` entry: a JWS (typ ``ledger-seal+jwt``) by ``identity`` over
        ``{"run", "count", "last", "iat"}`` where ``count`` is the number of entries this writer
        appended for the run and ``last`` is the seal line's own ``prev`` (the hash of the line
        before it). Both are taken under the lock, so no other line can slip in between.
        """
        from .. import jose

        if not isinstance(run, str) or run == NO_RUN:
            raise LedgerFormatError("a seal needs a run id")
        with self._locked():
            count = self._counts.get(run, 0)
            claims = {"run": run, "count": count, "last": self._last, "iat": int(time.time())}
            token = jose.encode(identity, jose.SEAL_TYP, claims)
            entry = self._append_locked(run, "seal", None, token, {"count": count})
            # A sealed run takes no more entries: its counter is no longer needed.
            self._counts.pop(run, None)
            if self._durability.sync_on_seal and not self._durability.sync_each_append:
                _sync(self._fd)
        return entry

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
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self._path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(self._path, flags)
                created = False
        except OSError as exc:
            raise LedgerError(f"cannot open ledger {os.fspath(self._path)!r}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise LedgerError(f"ledger {os.fspath(self._path)!r} is not a regular file")
            # The umask may have narrowed the mode; the ledger is exactly owner read/write.
            if created and stat.S_IMODE(info.st_mode) != 0o600:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return fd

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
        self, run: str, kind: str, jti: str | None, token: str | None, meta: dict[str, Any]
    ) -> LedgerEntry:
        seq, ts, prev = self._seq + 1, self._stamps.now(), self._last
        line = encode_fields(LEDGER_VERSION, seq, ts, run, kind, jti, token, meta, prev)
        if len(line) > MAX_LINE_BYTES:
            raise LedgerFormatError(f"the entry is larger than {MAX_LINE_BYTES} bytes")
        self._write(line + b"\n")
        self._seq = seq
        self._last = line_hash(line)
        if run != NO_RUN:
            counts = self._counts
            counts[run] = counts.get(run, 0) + 1
        return LedgerEntry(LEDGER_VERSION, seq, ts, run, kind, jti, token, meta, prev)

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
        self._recover(end - start, tail_hash, last_good, terminated)

    def _recover(self, torn_bytes: int, torn_hash: str, last_good_seq: int, terminated: bool) -> None:
        self._seq, self._last = last_good_seq, torn_hash
        entry = LedgerEntry(
            v=LEDGER_VERSION,
            seq=last_good_seq + 1,
            ts=self._stamps.now(),
            run=NO_RUN,
            kind="error",
            jti=None,
            token=None,
            meta={
                "code": RECOVERY_CODE,
                "torn_bytes": torn_bytes,
                "torn_hash": torn_hash,
                "last_good_seq": last_good_seq,
                "message": "the ledger's last line was torn or unreadable; it was closed and skipped",
            },
            prev=torn_hash,
        )
        line = encode_line(entry)
        # Terminating the torn line and the recovery record go out in one write.
        self._write((b"" if terminated else b"\n") + line + b"\n")
        self._seq, self._last = entry.seq, line_hash(line)
        self.recoveries.append(entry)


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
