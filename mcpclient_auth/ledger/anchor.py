"""External anchoring: copy each seal/checkpoint hash somewhere the ledger's writer cannot rewrite.

A hash chain proves that what is in the file is unaltered; it cannot prove that nothing *followed*
it — cutting whole sealed runs (or checkpoints) from the end leaves a valid file. An :class:`Anchor`
receives an :class:`AnchorPoint` (ledger name, ``seq``, line hash, ``ts``) for every seal and
checkpoint a :class:`~.writer.Ledger` writes; ``verify_ledger(..., anchor=points)`` (CLI: ``ledger
verify --anchor FILE``) then requires every anchored line to be in the file with that hash, so a
ledger that ends before its last anchored line fails ``anchor_missing``.

    anchor = FileAnchor("/var/lib/agent/anchors.jsonl")      # append-only JSONL, 0600
    ledger = Ledger("ledger.jsonl", key=agent, anchor=anchor)
    ...
    points = FileAnchor.read("/var/lib/agent/anchors.jsonl", ledger=ledger.anchor_name)
    verify_ledger("ledger.jsonl", trust, anchor=points).ok

The anchor is only as good as the place it writes to: a file next to the ledger, writable by the
same account, stops accidents, not an attacker. Point it at a different trust domain — a file on a
host the agent only appends to (``chattr +a``, a log shipper), a transparency log, or an object store
with object lock (WORM) in compliance mode: implement :class:`Anchor` with one ``put`` of the point's
JSON per call (docs/internals.md, "Anchoring", shows one).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import LedgerAnchorError, LedgerError
from ._files import open_private

if sys.platform != "win32":
    import fcntl

__all__ = ["Anchor", "AnchorPoint", "FileAnchor"]

#: Longest anchor line read back (ours are ~150 bytes).
_MAX_ANCHOR_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class AnchorPoint:
    """One anchored line: ``hash`` is :func:`~.format.line_hash` of the ledger line with ``seq``."""

    ledger: str
    seq: int
    hash: str
    ts: str

    def to_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger, "seq": self.seq, "hash": self.hash, "ts": self.ts}

    @classmethod
    def from_dict(cls, value: Any) -> AnchorPoint:
        if not isinstance(value, dict) or set(value) != {"ledger", "seq", "hash", "ts"}:
            raise LedgerAnchorError("an anchor record must be exactly {ledger, seq, hash, ts}")
        ledger, seq, digest, ts = value["ledger"], value["seq"], value["hash"], value["ts"]
        if not isinstance(ledger, str) or type(seq) is not int or seq < 1:
            raise LedgerAnchorError("an anchor record needs a string ledger and a positive integer seq")
        if not isinstance(digest, str) or len(digest) != 43 or not isinstance(ts, str):
            raise LedgerAnchorError("an anchor record needs a 43-character hash and a ts string")
        return cls(ledger, seq, digest, ts)


@runtime_checkable
class Anchor(Protocol):
    """Called by the writer after each seal or checkpoint it wrote (outside the ledger's lock).

    Raise to signal failure: :meth:`Ledger.seal` / :meth:`Ledger.checkpoint` re-raise it as
    :class:`~mcpclient_auth.errors.LedgerAnchorError` (the line itself is already in the file).
    """

    def anchor(self, point: AnchorPoint) -> None: ...


class FileAnchor:
    """Append-only JSONL of :class:`AnchorPoint`: one ``write()`` per record under ``flock``, file
    0600, never through a symlink — safe to share between the processes writing one ledger."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def anchor(self, point: AnchorPoint) -> None:
        line = json.dumps(point.to_dict(), separators=(",", ":")).encode("utf-8") + b"\n"
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND, what="anchor file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise LedgerAnchorError(
                f"cannot append to anchor file {os.fspath(self.path)!r}: {exc.strerror}"
            ) from None
        finally:
            os.close(fd)  # also releases the lock

    @staticmethod
    def read(path: str | os.PathLike[str], *, ledger: str | None = None) -> list[AnchorPoint]:
        """Every point in the file (of ``ledger`` only, when given), in file order.
        :class:`LedgerAnchorError` on an unreadable file or record (an auditor must not skip one)."""
        return list(_iter_points(Path(path), ledger))

    def __repr__(self) -> str:
        return f"FileAnchor({os.fspath(self.path)!r})"


def _iter_points(path: Path, ledger: str | None) -> Iterator[AnchorPoint]:
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below; a reader needs no lock
    except OSError as exc:
        raise LedgerAnchorError(f"cannot read anchor file {os.fspath(path)!r}: {exc.strerror}") from None
    with stream:
        for number, raw in enumerate(iter(lambda: stream.readline(_MAX_ANCHOR_LINE + 1), b""), 1):
            if not raw.endswith(b"\n"):
                if len(raw) > _MAX_ANCHOR_LINE:
                    raise LedgerAnchorError(f"anchor file line {number} is too long")
                # A torn last record (the anchoring process died mid-write) anchors nothing.
                return
            try:
                point = AnchorPoint.from_dict(json.loads(raw))
            except (ValueError, LedgerError) as exc:
                raise LedgerAnchorError(f"anchor file line {number} is not an anchor record: {exc}") from None
            if ledger is None or point.ledger == ledger:
                yield point
