"""The run's execution DAG: which earlier calls a new call descends from (pure: no I/O).

DAG rule (DESIGN §3): session-level calls point at the mandate and never join the frontier; a tool
call's ``pred`` is the current *frontier* — the completed tool calls no later completed call already
descends from — or the mandate when nothing has completed yet. Calls still in flight are never
predecessors (they are concurrent). So sequential calls form a chain, and parallel calls share a
parent and are joined by the next call (fan-in):

    >>> f = Frontier("mandate")
    >>> a, b = f.begin(), f.begin()          # issued together
    >>> a == b == ["mandate"]
    True
    >>> f.complete("A", a); f.complete("B", b)
    >>> sorted(f.begin())                   # the next call joins both
    ['A', 'B']

:func:`check_dag` is the offline check the ledger verifier runs over a whole run.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence

__all__ = ["MAX_PREDS", "Frontier", "check_dag"]

#: ECT reference limit on predecessors per node.
MAX_PREDS = 100


class Frontier:
    """The tool-call frontier of one run. Thread-safe; the sync and async hooks share it.

    ``max_preds`` caps one call's ``pred``; when more calls than that completed concurrently, the
    oldest are taken first and the rest stay in the frontier for the next call, so nothing is lost.
    """

    def __init__(self, root: str, *, max_preds: int = MAX_PREDS) -> None:
        if not root:
            raise ValueError("the DAG root (mandate jti) must be a non-empty string")
        if not 1 <= max_preds <= MAX_PREDS:
            raise ValueError(f"max_preds must be between 1 and {MAX_PREDS}")
        self.root = root
        self.max_preds = max_preds
        # dict as an insertion-ordered set: completion order decides who goes first past max_preds.
        self._frontier: dict[str, None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Frontier(root={self.root!r}, size={len(self._frontier)})"

    def session_pred(self) -> list[str]:
        """``pred`` for a session-level call: always the mandate."""
        return [self.root]

    def begin(self) -> list[str]:
        """``pred`` for a new tool call: a snapshot of the frontier, or ``[root]`` when it is empty."""
        with self._lock:
            if not self._frontier:
                return [self.root]
            return list(self._frontier)[: self.max_preds]

    def complete(self, jti: str, pred: Sequence[str]) -> None:
        """A tool call finished successfully: it replaces its predecessors in the frontier."""
        with self._lock:
            for parent in pred:
                self._frontier.pop(parent, None)
            self._frontier[jti] = None

    def current(self) -> list[str]:
        """The frontier now, capped at ``max_preds`` like :meth:`begin` (empty when no tool call has
        completed): the phase-2 record's ``pred``. Tokens may name at most 100 predecessors, so after
        more than that completed concurrently the record names the oldest ones."""
        with self._lock:
            return list(self._frontier)[: self.max_preds]


def check_dag(
    nodes: Mapping[str, Sequence[str]],
    *,
    known_roots: Collection[str],
    max_preds: int = MAX_PREDS,
) -> list[tuple[str, str]]:
    """Validate a run's DAG: ``nodes`` maps each ECT ``jti`` to its ``pred``.

    Returns ``(jti, problem)`` pairs, empty when the DAG holds: every predecessor is a node or a known
    root (the mandate), no node lists itself, the same predecessor twice or more than ``max_preds``,
    and there is no cycle.

        >>> check_dag({"a": ["m"], "b": ["a"]}, known_roots={"m"})
        []
        >>> check_dag({"a": ["b"], "b": ["a"]}, known_roots={"m"})
        [('a', 'cycle through a'), ('b', 'cycle through b')]
    """
    problems: list[tuple[str, str]] = []
    roots = set(known_roots)
    for jti, pred in nodes.items():
        if len(pred) > max_preds:
            problems.append((jti, f"{len(pred)} predecessors (at most {max_preds})"))
        if len(set(pred)) != len(pred):
            problems.append((jti, "duplicate predecessor"))
        for parent in pred:
            if parent == jti:
                problems.append((jti, "lists itself as predecessor"))
            elif parent not in nodes and parent not in roots:
                problems.append((jti, f"unknown predecessor {parent}"))
    problems.extend((jti, f"cycle through {jti}") for jti in _nodes_on_cycles(nodes))
    return problems


def _nodes_on_cycles(nodes: Mapping[str, Sequence[str]]) -> list[str]:
    """Nodes that lie on a cycle (self-loops excluded: reported separately), in input order.

    Iterative Tarjan SCC, so a long chain cannot exhaust the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    on_cycle: set[str] = set()
    counter = 0

    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, child_pos = work.pop()
            if child_pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = [p for p in nodes.get(node, ()) if p in nodes and p != node]
            if child_pos < len(children):
                work.append((node, child_pos + 1))
                child = children[child_pos]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            # All children done: fold lows up to the parent, pop a finished component.
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    on_cycle.update(component)
    return [jti for jti in nodes if jti in on_cycle]
