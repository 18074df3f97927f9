"""The DAG shape a server can check on its own: every ECT belongs to its mandate's run (``wid``), and
every predecessor it names is a node this server has seen for that run (pure: no I/O).

    shapes = RunShapes()
    shapes.check(mandate, ect)        # raises ClaimsInvalid (wid) or DagError (pred)
    ...                               # the rest of the request verifies
    shapes.accept(mandate, ect)       # ect.jti may now be named as a predecessor

A run's nodes are its mandate ``jti`` and the ECT ``jti`` values the verifier accepted for it. A
client's calls name as ``pred`` either the mandate or tool calls whose answers it received, which
this server accepted first; a ``pred`` the server never saw is a forged or foreign edge, and refused.

**Runs that call several servers** name predecessors another server accepted: configure
``multi_server_runs=True`` (``wid`` is still required; ``pred`` is then only checked by whoever
verifies the whole ledger). **Several worker processes** each hold their own memory: a run whose
calls are spread over workers gets its predecessors refused on a worker that did not accept them,
so route a run (its ``mcp-session-id``) to one worker, or use ``multi_server_runs=True``.

Memory is bounded: at most ``max_runs`` runs (least recently used dropped first, and any run whose
mandate has expired), each with at most ``max_nodes_per_run`` ECT ids (oldest dropped first). A
dropped node can no longer be named as a predecessor: the call is refused, never waved through.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..act import Mandate
from ..ect import ExecutionContextToken
from ..errors import ClaimsInvalid, DagError

__all__ = ["RunShapes"]

#: Seconds a run is kept past its mandate's ``exp`` (verifiers allow clock skew on ``exp``).
_GRACE = 300.0


class _Run:
    __slots__ = ("expires", "nodes")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.nodes: OrderedDict[str, None] = OrderedDict()


class RunShapes:
    """Per-run memory of accepted ECT ids, for the ``wid`` and ``pred`` checks (module docstring)."""

    def __init__(
        self,
        *,
        multi_server_runs: bool = False,
        max_runs: int = 10_000,
        max_nodes_per_run: int = 4_096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_runs < 1 or max_nodes_per_run < 1:
            raise ValueError("max_runs and max_nodes_per_run must be positive")
        self.multi_server_runs = multi_server_runs
        self.max_runs = max_runs
        self.max_nodes_per_run = max_nodes_per_run
        self._clock = clock
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._runs)

    def check(self, mandate: Mandate, ect: ExecutionContextToken) -> None:
        """Raise unless ``ect`` belongs to ``mandate``'s run and names only predecessors seen for it."""
        if ect.wid is None:
            raise ClaimsInvalid("the ECT names no run (wid); refused", code="ect_wid_missing")
        if ect.wid != mandate.jti:
            raise ClaimsInvalid("the ECT belongs to another run (wid)", code="ect_run_mismatch")
        if self.multi_server_runs:
            return
        unknown = [p for p in ect.pred if p != mandate.jti]
        if not unknown:
            return
        with self._lock:
            run = self._runs.get(mandate.jti)
            nodes = run.nodes if run is not None else {}
            missing = [p for p in unknown if p not in nodes]
        if missing:
            raise DagError(
                f"the ECT names {len(missing)} predecessor(s) this server has not accepted for the run",
                code="pred_unknown",
            )

    def accept(self, mandate: Mandate, ect: ExecutionContextToken) -> None:
        """Remember ``ect`` as a node of its run (after the whole request verified)."""
        now = self._clock()
        with self._lock:
            run = self._runs.get(mandate.jti)
            if run is None:
                run = self._runs[mandate.jti] = _Run(float(mandate.exp) + _GRACE)
                self._prune(now)
            else:
                self._runs.move_to_end(mandate.jti)
            run.nodes[ect.jti] = None
            while len(run.nodes) > self.max_nodes_per_run:
                run.nodes.popitem(last=False)

    def _prune(self, now: float) -> None:
        # Least recently used first: drop expired runs from the front (amortised O(1) per new run),
        # then whatever exceeds the bound.
        while self._runs:
            oldest = next(iter(self._runs.values()))
            if oldest.expires >= now and len(self._runs) <= self.max_runs:
                break
            self._runs.popitem(last=False)
