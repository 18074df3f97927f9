"""The server's audit ledger: each run's mandate once per file, signed checkpoints, shutdown.

    audit = ServerAudit("server-ledger.jsonl", key=server_key, checkpoint_every=1000)
    run = audit.mandate(verified.mandate)          # filed once per ledger file, across processes
    audit.append(run=run, kind="ect", jti=..., token=..., meta={...})
    audit.close()                                  # a last checkpoint (also on ASGI lifespan shutdown)

**Checkpoints.** A server cannot seal a client's run, so without help its ledger is an unkeyed hash
chain: anyone who can write the file can delete a line and re-chain the rest, add a denial, or cut
the end. With ``key`` (the server's own key — give it no issuer or agent role in verifiers' trust
stores) the audit writes a ``checkpoint`` every ``checkpoint_every`` entries it appended and when it
shuts down: a JWS over the line's ``seq``, ``ts`` and the hash of the line before it, which through
the chain pins every earlier line. ``verify_ledger(path, trust, allow_unsealed=True)`` then fails on
any deletion, insertion or edit before the last checkpoint (``checkpoint_mismatch`` or a broken
chain) and reports whatever follows it as ``unsealed_tail`` (exit 3); an anchor
(:mod:`mcpclient_auth.ledger.anchor`) also catches cutting the file back to an earlier checkpoint.

**One mandate per run per file — dedupe by ``jti``, not a file per worker.** The verifier insists a
run's entries start with its mandate and that the mandate appears once (``duplicate_jti``), and it
checks every ECT's ``pred`` against the run's earlier ECTs. A file per worker would keep the first
rule cheaply, but split each run's calls across files, so the DAG check of each file would see
``pred``\\ s it cannot resolve, and an auditor would have to merge files to see one run. So the
workers (and a restarted server) share one file and decide "is this run's mandate in the file yet?"
while holding the ledger's lock: on open the audit reads the file once for mandate lines, and
before filing a mandate it reads whatever other processes appended since it last looked (a byte
search for ``"kind":"mandate"``, parsing only those lines). Known mandates are forgotten once
expired (plus the clock skew): no request can be accepted under them any more, so memory follows
the live mandates, not the file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ..act import Mandate
from ..errors import LedgerError, LedgerFormatError, McpClientAuthError
from ..keys import Identity
from ..ledger import Ledger, LedgerEntry, parse_line
from ..ledger.anchor import Anchor
from ..ledger.writer import LedgerSection

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "ServerAudit"]

#: Entries (appended by one process) between two checkpoints.
DEFAULT_CHECKPOINT_EVERY = 1000
_MANDATE_MARK = b'"kind":"mandate"'
_SCAN_CHUNK = 1024 * 1024
#: Prune expired mandates after this many new ones.
_PRUNE_EVERY = 10_000

_log = logging.getLogger("mcpclient_auth.server")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class ServerAudit:
    """The audit ledger of one server process (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger | str | os.PathLike[str],
        *,
        key: Identity | None = None,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
        anchor: Anchor | None = None,
        skew: float = 60,
    ) -> None:
        if checkpoint_every is not None and (type(checkpoint_every) is not int or checkpoint_every < 1):
            raise LedgerError("checkpoint_every must be a positive integer or None")
        self._owns = not isinstance(ledger, Ledger)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger, key=key, anchor=anchor)
        self.key = key
        self.checkpoint_every = checkpoint_every
        self._skew = skew
        self._since_checkpoint = 0
        #: Mandate jti -> its exp, for every mandate in the file that is not yet long expired.
        self._mandates: dict[str, float] = {}
        self._added = 0
        self._scanned = 0  # file offset up to which mandate lines are known
        self._closed = False
        with self.ledger.exclusive() as section:
            self._scan(section)

    def mandate(self, mandate: Mandate) -> str:
        """File ``mandate`` unless the file already holds it; returns the run id."""
        run = mandate.jti
        if run in self._mandates:
            return run
        with self.ledger.exclusive() as section:
            self._scan(section)  # what other workers (or our previous life) filed meanwhile
            if run not in self._mandates:
                section.append(
                    run=run, kind="mandate", jti=run, token=mandate.token, meta={"agent": mandate.sub}
                )
                self._remember(run, mandate.exp)
                self._scanned = section.size
                self._since_checkpoint += 1
        self._maybe_checkpoint()
        return run

    def append(
        self,
        *,
        run: str,
        kind: str,
        jti: str | None = None,
        token: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        entry = self.ledger.append(run=run, kind=kind, jti=jti, token=token, meta=meta)
        self._since_checkpoint += 1
        self._maybe_checkpoint()
        return entry

    def checkpoint(self) -> LedgerEntry | None:
        """Write a checkpoint now (None without a key)."""
        if self.key is None:
            return None
        entry = self.ledger.checkpoint(self.key)
        self._since_checkpoint = 0
        return entry

    def close(self) -> None:
        """A last checkpoint (with a key), then close the ledger if the audit opened it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.key is not None and not self.ledger.closed:
                self.checkpoint()
        finally:
            if self._owns:
                self.ledger.close()

    def lifespan_send(self, send: Send) -> Send:
        """Wrap an ASGI lifespan ``send``: close (checkpoint) before the app reports shutdown complete,
        so the checkpoint follows the last request."""

        async def wrapped(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    self.close()
                except McpClientAuthError as exc:
                    _log.error("audit ledger: no shutdown checkpoint: %s (%s)", exc, exc.code)
            await send(message)

        return wrapped

    # --- internals ---------------------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        every = self.checkpoint_every
        if every is None or self.key is None or self._since_checkpoint < every:
            return
        try:
            self.checkpoint()
        except McpClientAuthError as exc:
            # The request was verified and its entry written; a checkpoint that could not be written
            # (or anchored) is retried at the next entry, and logged, rather than failing the call.
            _log.error("audit ledger: checkpoint failed: %s (%s)", exc, exc.code)

    def _remember(self, run: str, exp: float) -> None:
        self._mandates[run] = exp
        self._added += 1
        if self._added >= _PRUNE_EVERY:
            self._added = 0
            horizon = time.time() - self._skew - 60
            for jti in [jti for jti, exp_at in self._mandates.items() if exp_at < horizon]:
                del self._mandates[jti]

    def _scan(self, section: LedgerSection) -> None:
        """Learn the mandates in ``[self._scanned, size)`` (every line there is complete)."""
        size = section.size
        if size < self._scanned:  # the file was truncated or replaced: start over
            self._scanned = 0
            self._mandates.clear()
        position = self._scanned
        carry = b""
        while position < size:
            chunk = section.read(position, min(size, position + _SCAN_CHUNK))
            if not chunk:
                break
            position += len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if _MANDATE_MARK in data:
                for line in data[:cut].split(b"\n"):
                    if _MANDATE_MARK in line:
                        self._learn(line)
        self._scanned = size - len(carry)

    def _learn(self, line: bytes) -> None:
        try:
            entry = parse_line(line)
        except LedgerFormatError:
            return  # not ours to judge here; the verifier reports it
        if entry.kind != "mandate" or entry.token is None:
            return
        try:
            exp = float(Mandate.decode(entry.token).exp)
        except (McpClientAuthError, ValueError, TypeError):
            exp = float("inf")  # unknown: never forget it
        self._remember(entry.run, exp)
