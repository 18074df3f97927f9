"""Human views of a ledger: table rows, one-line run summaries, and pictures of a run's DAG.

    rows = list(table_rows(reader.entries(), tool="search"))      # for `ledger show`
    run_line(summary)                                            # for `ledger runs`
    graphs = build_graphs(reader.entries(), run=run_id, collapse=True)   # one RunGraph per run
    to_mermaid(graphs); to_dot(graphs); to_html(graphs, verdicts=verdicts_from(report))
    run_trees(graphs)                                            # `ledger show --tree`

**The picture tells the story.** With ``collapse=True`` the session plumbing of each MCP session
(``initialize``, ``notifications/initialized``, ``tools/list`` ...) is one node ("session 1 · 3 calls"),
so the main graph is the mandate, the tool calls, the refusals and the record. The HTML page starts
with one row per run — who, purpose, what the mandate granted, what was called, what was refused
before sending, the record, the verification verdict — and lists each collapsed session's calls in
a ``<details>`` element under its drawing.

The drawing is laid out here, without Graphviz or JavaScript: nodes are layered by their longest
path from the mandate (so a chain goes down, parallel calls sit side by side — fan-out — and the
call that joins them sits below with one edge from each — fan-in), ordered by ``seq`` inside a
layer; a layer wider than :data:`MAX_PER_ROW` wraps onto more rows and the SVG scales down with its
container, so a wide run never scrolls sideways. The HTML file is self-contained: inline CSS and
SVG, no script, no external reference.

Tokens are read here **without** verifying them: these are views. Use ``verify_ledger`` to check.
"""

from __future__ import annotations

import dataclasses
import html
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..policy import McpActionPolicy
from .format import NO_RUN, LedgerEntry
from .reader import RunSummary, unverified_claims

if TYPE_CHECKING:
    from .verify import Report

__all__ = [
    "MAX_PER_ROW",
    "NODE_KINDS",
    "Edge",
    "Node",
    "Row",
    "RunGraph",
    "SessionCall",
    "TreeItem",
    "build_graphs",
    "collapse_sessions",
    "run_line",
    "run_trees",
    "session_summary",
    "table_rows",
    "to_dot",
    "to_html",
    "to_mermaid",
    "verdicts_from",
]

_TIMES = "\u00d7"  # the multiplication sign of "tools/list \u00d72"


def _short(run: str) -> str:
    return run[:8]


# --- table ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of ``ledger show``."""

    seq: int
    time: str
    run: str
    kind: str
    call: str
    status: str
    duration: str
    principal: str

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "seq",
        "time",
        "run",
        "kind",
        "method/tool",
        "status",
        "duration",
        "principal",
    )

    def cells(self) -> tuple[str, ...]:
        return (
            str(self.seq),
            self.time,
            self.run,
            self.kind,
            self.call,
            self.status,
            self.duration,
            self.principal,
        )


def _call_label(meta: dict[str, Any]) -> str:
    method, tool = meta.get("method"), meta.get("tool")
    label = str(method) if method is not None else ""
    if tool is not None:
        label = f"{label} {tool}".strip()
    return label


def _time(ts: str) -> str:
    # 2026-11-05T09:30:00.123456Z -> 2026-11-05 09:30:00.123
    return f"{ts[:10]} {ts[11:23]}" if len(ts) >= 23 else ts


def _duration(meta: dict[str, Any]) -> str:
    value = meta.get("duration_ms")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} ms"
    return ""


@dataclass(slots=True)
class _Calls:
    """Per-run memory of the calls seen so far, so a response row can name what it answers."""

    labels: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    principal: str = ""


def table_rows(
    entries: Iterable[LedgerEntry],
    *,
    run: str | None = None,
    kind: str | None = None,
    tool: str | None = None,
) -> Iterator[Row]:
    """Rows for ``ledger show``; ``run`` matches a run id or a prefix of one; ``tool`` keeps the
    calls of that tool, their responses and denials."""
    calls: dict[str, _Calls] = {}
    for entry in entries:
        if run is not None and not entry.run.startswith(run):
            continue
        meta = entry.meta
        run_calls = calls.setdefault(entry.run, _Calls())
        known = run_calls.labels
        principal = meta.get("principal")
        if isinstance(principal, str) and not run_calls.principal:
            run_calls.principal = principal
        entry_tool = meta.get("tool")
        label = _call_label(meta)
        status = ""
        if entry.kind == "ect" and entry.jti:
            tool_name = entry_tool if isinstance(entry_tool, str) else None
            known[entry.jti] = (label, str(principal or ""), tool_name)
        elif entry.kind == "response":
            answered = known.get(entry.jti or "")
            if answered is not None:
                label, principal, entry_tool = "→ " + answered[0], principal or answered[1], answered[2]
            status = str(meta.get("status", ""))
        elif entry.kind in ("denial", "error"):
            status = str(meta.get("code", ""))
        elif entry.kind == "mandate":
            purpose = unverified_claims(entry.token).get("task", {})
            label = str(purpose.get("purpose", "")) if isinstance(purpose, dict) else ""
        elif entry.kind == "record":
            claims = unverified_claims(entry.token)
            status = str(claims.get("status", meta.get("status", "")))
            label = str(claims.get("exec_act") or "")
        elif entry.kind == "seal":
            status = f"sealed ({meta.get('count', '?')})"
            calls.pop(entry.run, None)
        if kind is not None and entry.kind != kind:
            continue
        if tool is not None and entry_tool != tool:
            continue
        yield Row(
            entry.seq,
            _time(entry.ts),
            _short(entry.run) if entry.run != NO_RUN else "-",
            entry.kind,
            label,
            status,
            _duration(meta),
            str(principal or run_calls.principal),
        )


def run_line(summary: RunSummary) -> str:
    """One line per run for ``ledger runs``."""
    verified = {True: "yes", False: "NO", None: "-"}[summary.verified]
    purpose = (summary.purpose or "").replace('"', "'")
    return (
        f'{summary.run}  purpose="{purpose}"  principal={summary.principal or "-"}  '
        f"calls={summary.calls}  session={summary.session_calls}  denials={summary.denials}  "
        f"status={summary.status}  sealed={'yes' if summary.sealed else 'no'}  verified={verified}"
    )


# --- the DAG model ---------------------------------------------------------------------------------

#: Node kinds and their colours (fill, stroke) in every picture.
NODE_KINDS: dict[str, tuple[str, str]] = {
    "mandate": ("#dbe4ff", "#364fc7"),
    "tool": ("#d3f9d8", "#2b8a3e"),
    "session": ("#f1f3f5", "#868e96"),
    "denial": ("#ffe3e3", "#c92a2a"),
    "record": ("#e5dbff", "#5f3dc4"),
    "unknown": ("#fff3bf", "#e67700"),
}


@dataclass(frozen=True, slots=True)
class SessionCall:
    """One session-level call (``initialize``, ``tools/list`` ...) inside a collapsed session node."""

    seq: int
    method: str
    jti: str
    status: str = ""
    duration: str = ""


@dataclass(slots=True)
class Node:
    id: str
    kind: str
    title: str
    detail: str
    seq: int
    layer: int = 0
    tooltip: str = ""
    #: The tool a tool call or a denial names; a denial's refusal code.
    tool: str = ""
    code: str = ""
    #: The answer's HTTP status and duration, once the response is in the ledger.
    status: str = ""
    duration: str = ""
    #: Session calls: the MCP session they belong to (1, 2, ... in the run, counted by ``initialize``).
    session: int = 0
    #: A collapsed session node: the calls it stands for, in ``seq`` order.
    calls: list[SessionCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    dashed: bool = False


@dataclass(slots=True)
class RunGraph:
    """The execution DAG of one run, ready to draw."""

    run: str
    purpose: str = ""
    principal: str = ""
    sealed: bool = False
    status: str = "open"
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    #: From the mandate: who issued it, to which agent, and the actions it grants.
    issuer: str = ""
    agent: str = ""
    granted: list[str] = field(default_factory=list)
    #: Whether session calls are drawn as one node per MCP session (:func:`collapse_sessions`).
    collapsed: bool = False
    #: Building state: the open session per endpoint URL, and how many sessions were seen.
    open_sessions: dict[str, int] = field(default_factory=dict, repr=False)
    session_count: int = 0

    def layers(self) -> list[list[Node]]:
        """Nodes grouped by layer, each layer in ``seq`` order."""
        out: list[list[Node]] = []
        for node in sorted(self.nodes.values(), key=lambda n: (n.layer, n.seq)):
            while len(out) <= node.layer:
                out.append([])
            out[node.layer].append(node)
        return out

    def ordered(self) -> list[Node]:
        """All nodes, layer by layer."""
        return [node for layer in self.layers() for node in layer]

    def called(self) -> dict[str, int]:
        """Tool name -> how many calls were sent, in order of the first call."""
        counts: dict[str, int] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.seq):
            if node.kind == "tool":
                counts[node.tool or node.title] = counts.get(node.tool or node.title, 0) + 1
        return counts

    def refused(self) -> list[tuple[str, str]]:
        """(tool, code) of every call refused before it was sent, in order."""
        ordered = sorted(self.nodes.values(), key=lambda n: n.seq)
        return [(n.tool, n.code) for n in ordered if n.kind == "denial"]

    def sessions(self) -> int:
        """How many MCP sessions the run opened (as far as its ``initialize`` calls tell)."""
        return self.session_count

    def _add_edge(self, source: str, target: str, *, dashed: bool = False) -> None:
        if source not in self.nodes:
            # A predecessor that is not in the run: draw it, flagged, rather than drop the edge.
            self.nodes[source] = Node(source, "unknown", "unknown pred", _short(source), -1, 0, source)
        self.edges.append(Edge(source, target, dashed))
        self.nodes[target].layer = max(self.nodes[target].layer, self.nodes[source].layer + 1)


def build_graphs(
    entries: Iterable[LedgerEntry], *, run: str | None = None, collapse: bool = False
) -> list[RunGraph]:
    """One :class:`RunGraph` per run (or only runs whose id starts with ``run``), in file order.

    ``collapse=True``: session plumbing as one node per MCP session (:func:`collapse_sessions`).
    """
    graphs: dict[str, RunGraph] = {}
    for entry in entries:
        if entry.run == NO_RUN or (run is not None and not entry.run.startswith(run)):
            continue
        graph = graphs.get(entry.run)
        if graph is None:
            graph = graphs[entry.run] = RunGraph(entry.run)
        _ADD[entry.kind](graph, entry)
    built = list(graphs.values())
    return [collapse_sessions(graph) for graph in built] if collapse else built


def _add_mandate(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = unverified_claims(entry.token)
    task = claims.get("task")
    graph.purpose = str(task.get("purpose", "")) if isinstance(task, dict) else ""
    principal = entry.meta.get("principal")
    if isinstance(principal, str):
        graph.principal = principal
    caps = [str(c.get("action")) for c in claims.get("cap", []) if isinstance(c, dict)]
    graph.issuer, graph.agent, graph.granted = str(claims.get("iss", "")), str(claims.get("sub", "")), caps
    node_id = entry.jti or entry.run
    if node_id in graph.nodes and graph.nodes[node_id].kind != "unknown":
        return
    graph.nodes[node_id] = Node(
        node_id,
        "mandate",
        "mandate",
        f"{claims.get('sub', '?')} · {len(caps)} caps",
        entry.seq,
        0,
        f"mandate {node_id}\nissuer: {claims.get('iss', '?')}\nagent: {claims.get('sub', '?')}\n"
        f"purpose: {graph.purpose}\ncapabilities: {', '.join(caps)}",
    )


def _add_ect(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = unverified_claims(entry.token)
    action = claims.get("exec_act") or entry.meta.get("action") or ""
    jti = entry.jti or str(claims.get("jti", f"ect-{entry.seq}"))
    is_tool = (
        isinstance(action, str) and bool(action) and not action.startswith(McpActionPolicy.SESSION_PREFIX)
    )
    tool = entry.meta.get("tool")
    method = str(entry.meta.get("method") or action)
    title = str(tool) if is_tool and tool else method
    if principal := entry.meta.get("principal"):
        graph.principal = graph.principal or str(principal)
    node = Node(
        jti,
        "tool" if is_tool else "session",
        title,
        f"seq {entry.seq} · {_short(jti)}",
        entry.seq,
        1,
        f"{'tool call' if is_tool else 'session call'} {jti}\naction: {action}\n"
        f"seq: {entry.seq}\nts: {entry.ts}",
        tool=str(tool) if is_tool and tool else "",
    )
    if not is_tool:
        # Which MCP session: each `initialize` opens one (per endpoint); later session calls to that
        # endpoint belong to it. The ledger carries no session id, so concurrent per-call sessions
        # to one endpoint can be attributed to the newest of them.
        url = str(entry.meta.get("url") or "")
        if method == "initialize" or url not in graph.open_sessions:
            graph.session_count += 1
            graph.open_sessions[url] = graph.session_count
        node.session = graph.open_sessions[url]
    graph.nodes[jti] = node
    preds = claims.get("pred")
    for parent in preds if isinstance(preds, list) else []:
        if isinstance(parent, str) and parent != jti:
            graph._add_edge(parent, jti)


def _add_response(graph: RunGraph, entry: LedgerEntry) -> None:
    node = graph.nodes.get(entry.jti or "")
    if node is None:
        return
    status = entry.meta.get("status")
    duration = _duration(entry.meta)
    node.status = str(status) if status is not None else ""
    node.duration = duration
    node.detail = f"{node.detail} · {status}" if status is not None else node.detail
    node.tooltip += f"\nresponse: {status}" + (f" in {duration}" if duration else "")


def _add_denial(graph: RunGraph, entry: LedgerEntry) -> None:
    node_id = f"denial-{entry.seq}"
    tool = entry.meta.get("tool") or entry.meta.get("method") or "?"
    code = entry.meta.get("code", "denied")
    graph.nodes[node_id] = Node(
        node_id,
        "denial",
        str(tool),  # the colour and the dashed edge say "refused"; the title keeps the whole tool name
        f"refused: {code} · seq {entry.seq}",
        entry.seq,
        1,
        f"denial at seq {entry.seq}\naction: {entry.meta.get('action', '?')}\ncode: {code}",
        tool=str(tool),
        code=str(code),
    )
    graph._add_edge(graph.run, node_id, dashed=True)


def _add_record(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = unverified_claims(entry.token)
    node_id = f"record-{entry.seq}"
    graph.status = str(claims.get("status", entry.meta.get("status", "recorded")))
    graph.nodes[node_id] = Node(
        node_id,
        "record",
        f"record: {graph.status}",
        f"seq {entry.seq} · {claims.get('exec_act') or 'no tool'}",
        entry.seq,
        1,
        f"execution record {entry.jti}\nstatus: {graph.status}\nexec_act: {claims.get('exec_act')}",
    )
    preds = claims.get("pred")
    parents = [p for p in preds if isinstance(p, str)] if isinstance(preds, list) else []
    for parent in parents or [graph.run]:
        graph._add_edge(parent, node_id)


def _add_seal(graph: RunGraph, entry: LedgerEntry) -> None:
    graph.sealed = True


def _add_nothing(graph: RunGraph, entry: LedgerEntry) -> None:
    """Error entries are not DAG nodes."""


_ADD = {
    "mandate": _add_mandate,
    "ect": _add_ect,
    "response": _add_response,
    "denial": _add_denial,
    "record": _add_record,
    "seal": _add_seal,
    "error": _add_nothing,
    "checkpoint": _add_nothing,  # ledger-level (run ""): only a forged one carries a run id
}


# --- collapsing the session plumbing ----------------------------------------------------------------


def session_summary(calls: Sequence[SessionCall]) -> str:
    """``initialize, notifications/initialized, tools/list \u00d72`` — methods in order of first use."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.method] = counts.get(call.method, 0) + 1
    return ", ".join(method if n == 1 else f"{method} {_TIMES}{n}" for method, n in counts.items())


def _failed(call: SessionCall) -> bool:
    return call.status.isdigit() and int(call.status) >= 400


def collapse_sessions(graph: RunGraph) -> RunGraph:
    """A copy of ``graph`` whose session calls are one node per MCP session (``session-<n>``).

    Tool calls, denials, the mandate and the record are kept as they are; edges to and from session
    calls are redirected to their session's node (duplicates dropped) and the layers recomputed.
    """
    out = RunGraph(
        graph.run,
        purpose=graph.purpose,
        principal=graph.principal,
        sealed=graph.sealed,
        status=graph.status,
        issuer=graph.issuer,
        agent=graph.agent,
        granted=list(graph.granted),
        collapsed=True,
        session_count=graph.session_count,
    )
    moved: dict[str, str] = {}
    for node in sorted(graph.nodes.values(), key=lambda n: n.seq):
        if node.kind != "session":
            out.nodes[node.id] = dataclasses.replace(node, calls=list(node.calls))
            continue
        group_id = f"session-{node.session}"
        group = out.nodes.get(group_id)
        if group is None:
            group = out.nodes[group_id] = Node(group_id, "session", "", "", node.seq, session=node.session)
        group.calls.append(SessionCall(node.seq, node.title, node.id, node.status, node.duration))
        moved[node.id] = group_id
    for node in out.nodes.values():
        if node.kind == "session":
            failed = sum(1 for call in node.calls if _failed(call))
            count = len(node.calls)
            node.title = f"session {node.session} · {_plural(count, 'call')}"
            node.title += f" · {failed} failed" if failed else ""
            node.detail = session_summary(node.calls)
            node.tooltip = f"MCP session {node.session} of run {graph.run}\n" + "\n".join(
                f"seq {c.seq}: {c.method}" + (f" → {c.status}" if c.status else "") for c in node.calls
            )
    seen: set[tuple[str, str, bool]] = set()
    for edge in graph.edges:
        source, target = moved.get(edge.source, edge.source), moved.get(edge.target, edge.target)
        key = (source, target, edge.dashed)
        if source == target or key in seen:
            continue
        seen.add(key)
        out.edges.append(Edge(source, target, edge.dashed))
    _relayer(out)
    return out


def _relayer(graph: RunGraph) -> None:
    """Longest path from the roots (Kahn's order; nodes on a cycle keep the depth reached so far)."""
    incoming: dict[str, int] = dict.fromkeys(graph.nodes, 0)
    outgoing: dict[str, list[str]] = {node_id: [] for node_id in graph.nodes}
    for edge in graph.edges:
        incoming[edge.target] += 1
        outgoing[edge.source].append(edge.target)
    depth = {
        node_id: 0 if node.kind in ("mandate", "unknown") else 1 for node_id, node in graph.nodes.items()
    }
    roots = sorted((n for n, count in incoming.items() if count == 0), key=lambda n: graph.nodes[n].seq)
    ready = deque(roots)
    while ready:
        node_id = ready.popleft()
        for child in outgoing[node_id]:
            depth[child] = max(depth[child], depth[node_id] + 1)
            incoming[child] -= 1
            if incoming[child] == 0:
                ready.append(child)
    for node_id, node in graph.nodes.items():
        node.layer = depth[node_id]


# --- a tree per run (``ledger show --tree``) ----------------------------------------------------------


@dataclass(slots=True)
class TreeItem:
    """One line of a run's tree and the lines under it."""

    label: str
    kind: str = ""
    children: list[TreeItem] = field(default_factory=list)


def run_trees(graphs: Sequence[RunGraph], *, expand: bool = False) -> list[TreeItem]:
    """One tree per run: its mandate, sessions, tool calls, denials and record in ``seq`` order.

    A collapsed graph's session is one line (``expand=True`` lists its calls under it); a tool call
    names the calls it follows from when that is not simply the one before it.
    """
    trees: list[TreeItem] = []
    for graph in graphs:
        verdict = f"{graph.status}, {'sealed' if graph.sealed else 'not sealed'}"
        root = TreeItem(
            f"run {graph.run} · {graph.principal or '-'} · {graph.purpose or '-'} · {verdict}", "run"
        )
        parents: dict[str, list[str]] = {}
        for edge in graph.edges:
            parents.setdefault(edge.target, []).append(edge.source)
        previous = ""
        for node in sorted(graph.nodes.values(), key=lambda n: n.seq):
            item = TreeItem(_tree_label(graph, node, parents.get(node.id, []), previous), node.kind)
            if node.kind == "session" and node.calls and expand:
                item.children = [
                    TreeItem(
                        f"{c.method}"
                        + (f" → {c.status}" if c.status else "")
                        + (f" · {c.duration}" if c.duration else "")
                        + f" · seq {c.seq}",
                        "session",
                    )
                    for c in node.calls
                ]
            root.children.append(item)
            if node.kind == "tool":
                previous = node.id
        trees.append(root)
    return trees


def _tree_label(graph: RunGraph, node: Node, parents: list[str], previous: str) -> str:
    answered = (f" → {node.status}" if node.status else "") + (f" · {node.duration}" if node.duration else "")
    if node.kind == "mandate":
        granted = ", ".join(a.removeprefix("mcp.") for a in graph.granted) or "nothing"
        return f"mandate · {graph.issuer or '?'} lets {graph.agent or '?'} call: {granted}"
    if node.kind == "session" and node.calls:
        return f"{node.title}: {session_summary(node.calls)}"
    if node.kind == "session":
        return f"{node.title}{answered} · session {node.session} · seq {node.seq}"
    if node.kind == "tool":
        tools = [graph.nodes[p] for p in parents if p in graph.nodes]
        follows = [parent.title for parent in tools if parent.kind == "tool"]
        after = f" · after {', '.join(follows)}" if follows and parents != [previous] else ""
        return f"tools/call {node.title}{answered}{after} · seq {node.seq}"
    if node.kind == "denial":
        return f"refused before sending: {node.tool} ({node.code}) · seq {node.seq}"
    if node.kind == "record":
        return f"{node.title} · {node.detail}"
    return f"{node.title} · {node.detail}"


# --- verdicts -------------------------------------------------------------------------------------------


def verdicts_from(report: Report) -> dict[str, str]:
    """Run id -> ``verified`` or ``FAILED: <checks>`` from a :func:`verify_ledger` report."""
    from .verify import TAIL_CHECKS

    general = {f.check for f in report.failures if f.run is None and f.check not in TAIL_CHECKS}
    # The uncovered tail concerns only the runs with entries in it.
    tail = {f.check for f in report.failures if f.run is None and f.check in TAIL_CHECKS}
    tail_runs = report.tail.runs if report.tail is not None else set()
    out: dict[str, str] = {}
    for run, summary in report.runs.items():
        own = {f.check for f in report.failures if f.run == run}
        checks = sorted(own | general | (tail if run in tail_runs else set()))
        if checks:
            out[run] = "FAILED: " + ", ".join(checks)
        else:
            out[run] = "verified" if summary.verified else "not verified"
    return out


# --- Mermaid and DOT ---------------------------------------------------------------------------------


def _ids(graphs: Sequence[RunGraph]) -> dict[tuple[str, str], str]:
    ids: dict[tuple[str, str], str] = {}
    for graph in graphs:
        for node_id in graph.nodes:
            ids[(graph.run, node_id)] = f"n{len(ids)}"
    return ids


def _mermaid_text(text: str) -> str:
    # Mermaid's own entity syntax (#name;), "#" first so the codes added here stay intact.
    for char, code in (("#", "#35;"), ("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def to_mermaid(graphs: Sequence[RunGraph]) -> str:
    """A Mermaid ``flowchart`` (one subgraph per run); denial edges are dotted."""
    ids = _ids(graphs)
    lines = ["flowchart TD"]
    for index, graph in enumerate(graphs):
        lines.append(f'  subgraph run{index}["run {_short(graph.run)}: {_mermaid_text(graph.purpose)}"]')
        for node in graph.ordered():
            label = f"{_mermaid_text(node.title)}<br/>{_mermaid_text(node.detail)}"
            shape = ('(["', '"])') if node.kind == "mandate" else ('["', '"]')
            lines.append(f"    {ids[(graph.run, node.id)]}{shape[0]}{label}{shape[1]}")
        lines.append("  end")
        for edge in graph.edges:
            arrow = "-.->" if edge.dashed else "-->"
            lines.append(f"  {ids[(graph.run, edge.source)]} {arrow} {ids[(graph.run, edge.target)]}")
    for kind, (fill, stroke) in NODE_KINDS.items():
        lines.append(f"  classDef {kind} fill:{fill},stroke:{stroke}")
    for kind in NODE_KINDS:
        members = [ids[(g.run, n.id)] for g in graphs for n in g.nodes.values() if n.kind == kind]
        if members:
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graphs: Sequence[RunGraph]) -> str:
    """Graphviz DOT (one cluster per run); denial edges are dashed."""
    ids = _ids(graphs)
    lines = [
        "digraph ledger {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]
    for index, graph in enumerate(graphs):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f'    label="run {_dot_text(_short(graph.run))}: {_dot_text(graph.purpose)}";')
        for node in graph.ordered():
            fill, stroke = NODE_KINDS[node.kind]
            label = _dot_text(f"{node.title}\n{node.detail}")
            lines.append(
                f'    {ids[(graph.run, node.id)]} [label="{label}", fillcolor="{fill}", color="{stroke}", '
                f'tooltip="{_dot_text(node.tooltip)}"];'
            )
        lines.append("  }")
        for edge in graph.edges:
            style = " [style=dashed]" if edge.dashed else ""
            lines.append(f"  {ids[(graph.run, edge.source)]} -> {ids[(graph.run, edge.target)]}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- HTML with an inline SVG ------------------------------------------------------------------------

_NODE_W, _NODE_H = 180, 56
_GAP_X, _GAP_Y = 22, 50
_MARGIN = 16
#: At most this many nodes side by side; a wider layer (many parallel calls) wraps onto more rows, so
#: a drawing is at most 2*16 + 6*180 + 5*22 = 1222 px wide and fits a 1400 px window unscaled.
MAX_PER_ROW = 6


def _esc(text: object) -> str:
    # Also escape ":" so that no URL-looking text (an endpoint in a tooltip) appears literally: the
    # file must be self-contained, and a checker can then simply search for "://".
    return html.escape(str(text), quote=True).replace(":", "&#58;")


def _clip(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, width: int = 30, lines: int = 2) -> list[str]:
    """``text`` on at most ``lines`` lines of ``width`` characters, broken after ", " where possible."""
    out: list[str] = []
    rest = text
    while rest and len(out) < lines:
        if len(rest) <= width:
            out.append(rest)
            rest = ""
            break
        cut = rest.rfind(", ", 0, width)
        cut = cut + 1 if cut > 0 else width
        out.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        out[-1] = _clip(out[-1] + " " + rest, width)
    return out


@dataclass(frozen=True, slots=True)
class _Placed:
    node: Node
    x: float
    y: float


def layout(graph: RunGraph, *, per_row: int = MAX_PER_ROW) -> tuple[dict[str, _Placed], float, float]:
    """Positions (top-left corners) and the drawing's width and height.

    Each layer is a row, centred; a layer of more than ``per_row`` nodes wraps onto several rows.
    """
    rows: list[list[Node]] = []
    for layer in graph.layers():
        rows.extend(layer[start : start + per_row] for start in range(0, len(layer), per_row))
    widest = max((len(row) for row in rows), default=1)
    width = 2 * _MARGIN + widest * _NODE_W + (widest - 1) * _GAP_X
    placed: dict[str, _Placed] = {}
    for depth, row in enumerate(rows):
        row_width = len(row) * _NODE_W + (len(row) - 1) * _GAP_X
        left = (width - row_width) / 2
        y = _MARGIN + depth * (_NODE_H + _GAP_Y)
        for index, node in enumerate(row):
            placed[node.id] = _Placed(node, left + index * (_NODE_W + _GAP_X), y)
    height = 2 * _MARGIN + len(rows) * _NODE_H + max(len(rows) - 1, 0) * _GAP_Y
    return placed, width, height


def _session_anchor(index: int, node: Node) -> str:
    return f"run{index}-session-{node.session}"


def to_svg(graph: RunGraph, index: int = 0) -> str:
    """An inline ``<svg>`` drawing of one run (no namespace URL needed inside HTML).

    It scales down with its container (``max-width: 100%``) rather than overflow it.
    """
    placed, width, height = layout(graph)
    marker = f"arrow{index}"
    parts = [
        f'<svg class="dag" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        'preserveAspectRatio="xMidYMin meet" role="img" '
        f'aria-label="execution DAG of run {_esc(graph.run)}">',
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/>'
        "</marker></defs>",
    ]
    for edge in graph.edges:
        source, target = placed[edge.source], placed[edge.target]
        x1, y1 = source.x + _NODE_W / 2, source.y + _NODE_H
        x2, y2 = target.x + _NODE_W / 2, target.y
        bend = max((y2 - y1) / 2, 20)
        dash = ' stroke-dasharray="5,4"' if edge.dashed else ""
        plumbing = target.node.kind == "session" or source.node.kind == "session"
        colour, stroke_width = ("#adb5bd", "1.1") if plumbing else ("#495057", "1.4")
        parts.append(
            f'<path class="edge" data-from="{_esc(edge.source)}" data-to="{_esc(edge.target)}" '
            f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="{colour}" stroke-width="{stroke_width}"{dash} marker-end="url(#{marker})"/>'
        )
    for spot in placed.values():
        node = spot.node
        fill, stroke = NODE_KINDS[node.kind]
        radius = 24 if node.kind == "mandate" else 7
        center = spot.x + _NODE_W / 2
        # a collapsed session lists its methods on up to three lines; other nodes have one detail line
        details = _wrap(node.detail, 32, 3) if node.calls else [_clip(node.detail, 34)]
        top = spot.y + (16 if len(details) > 1 else 22)
        text = f'<text x="{center:.1f}" y="{top:.1f}" class="t">{_esc(_clip(node.title))}</text>'
        text += "".join(
            f'<text x="{center:.1f}" y="{top + 14 + 11 * line:.1f}" class="d">{_esc(value)}</text>'
            for line, value in enumerate(details)
        )
        shape = (
            f'<rect x="{spot.x:.1f}" y="{spot.y:.1f}" width="{_NODE_W}" height="{_NODE_H}" rx="{radius}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>'
        )
        body = shape + text
        if node.calls:  # a collapsed session: the node links to its list of calls under the drawing
            body = f'<a href="#{_session_anchor(index, node)}">{body}</a>'
        parts.append(
            f'<g class="node {node.kind}" data-id="{_esc(node.id)}" data-kind="{node.kind}">'
            f"<title>{_esc(node.tooltip or node.id)}</title>{body}</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #212529;
  max-width: 1320px; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin: 28px 0 6px; }
p.sub { color: #495057; margin-top: 0; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
table.runs { width: 100%; table-layout: fixed; margin: 12px 0 8px; }
table.runs th, table.runs td { border-bottom: 1px solid #dee2e6; padding: 6px 8px; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
table.runs th { background: #f8f9fa; font-weight: 600; }
td.ok { color: #2b8a3e; font-weight: 600; } td.bad { color: #c92a2a; font-weight: 600; }
ul.plain { margin: 0; padding-left: 0; list-style: none; }
.dag text { font-size: 12px; text-anchor: middle; } .dag text.d { font-size: 10px; fill: #495057; }
.dag text.t { font-weight: 600; } .dag a { cursor: pointer; }
.dag { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.legend span { display: inline-block; padding: 2px 10px; margin: 0 8px 4px 0; border-radius: 6px;
  font-size: 12px; border: 1px solid; }
.picture { border: 1px solid #e9ecef; border-radius: 6px; background: #fff; padding: 4px; }
details.session { margin: 6px 0 0; font-size: 13px; }
details.session summary { cursor: pointer; color: #495057; }
details.session table td, details.session table th { padding: 2px 10px 2px 0; text-align: left; }
code { font-size: 12px; }
"""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_LIST_SHOWN = 6


def _list(items: Sequence[str], empty: str = "-") -> str:
    """A cell's list; past :data:`_LIST_SHOWN` items the rest folds into a ``<details>``."""
    if not items:
        return _esc(empty)

    def ul(part: Sequence[str]) -> str:
        return '<ul class="plain">' + "".join(f"<li>{_esc(item)}</li>" for item in part) + "</ul>"

    if len(items) <= _LIST_SHOWN:
        return ul(items)
    shown = _LIST_SHOWN - 1
    more = items[shown:]
    return f"{ul(items[:shown])}<details><summary>{len(more)} more</summary>{ul(more)}</details>"


def _summary_table(graphs: Sequence[RunGraph], verdicts: Mapping[str, str] | None) -> str:
    head = ("run", "who", "purpose", "granted", "called", "refused before sending", "record", "verification")
    rows = ["<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for index, graph in enumerate(graphs):
        called = [f"{tool} {_TIMES}{n}" if n > 1 else tool for tool, n in graph.called().items()]
        refused = [f"{tool} ({code})" for tool, code in graph.refused()]
        who = [graph.principal or "-"]
        if graph.agent:
            who.append(f"agent: {graph.agent}")
        verdict = (verdicts or {}).get(graph.run, "not checked")
        css = "ok" if verdict == "verified" else ("bad" if verdict.startswith("FAILED") else "")
        record = f"{graph.status}, {'sealed' if graph.sealed else 'not sealed'}"
        rows.append(
            "<tr>"
            f'<td><a href="#run{index}">{_esc(_short(graph.run))}</a></td>'
            f"<td>{_list(who)}</td><td>{_esc(graph.purpose or '-')}</td>"
            f"<td>{_list([a.removeprefix('mcp.') for a in graph.granted], 'nothing')}</td>"
            f"<td>{_list(called, 'no tool')}</td><td>{_list(refused)}</td>"
            f"<td>{_esc(record)}</td>"
            f'<td class="{css}">{_esc(verdict)}</td>'
            "</tr>"
        )
    rows.append("</tbody>")
    return '<table class="runs">' + "".join(rows) + "</table>"


def _session_details(graph: RunGraph, index: int) -> str:
    parts = []
    for node in sorted(graph.nodes.values(), key=lambda n: n.seq):
        if not node.calls:
            continue
        rows = "".join(
            f"<tr><td>{c.seq}</td><td>{_esc(c.method)}</td><td>{_esc(c.status or '-')}</td>"
            f"<td>{_esc(c.duration)}</td><td><code>{_esc(_short(c.jti))}</code></td></tr>"
            for c in node.calls
        )
        parts.append(
            f'<details class="session" id="{_session_anchor(index, node)}"><summary>{_esc(node.title)}: '
            f"{_esc(session_summary(node.calls))}</summary><table><tr><th>seq</th><th>method</th>"
            f"<th>status</th><th>duration</th><th>ECT</th></tr>{rows}</table></details>"
        )
    return "".join(parts)


def to_html(
    graphs: Sequence[RunGraph],
    *,
    title: str = "mcpclient-auth ledger",
    verdicts: Mapping[str, str] | None = None,
) -> str:
    """One self-contained HTML page: the runs summarised at the top, then each run's DAG as inline SVG.

    ``verdicts``: run id -> the verification verdict (:func:`verdicts_from`); else "not checked".
    No script, no external reference; collapsed sessions expand with ``<details>``.
    """
    legend = "".join(
        f'<span style="background:{fill};border-color:{stroke}">{_esc(kind)}</span>'
        for kind, (fill, stroke) in NODE_KINDS.items()
        if kind != "unknown"
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if not graphs:
        body.append("<p>No runs in this ledger.</p>")
    else:
        body.append(_summary_table(graphs, verdicts))
        body.append(
            f'<p class="legend">{legend} <span style="border-style:dashed">refused (dashed edge)</span></p>'
        )
    for index, graph in enumerate(graphs):
        tools = sum(1 for n in graph.nodes.values() if n.kind == "tool")
        session_calls = sum(len(n.calls) or 1 for n in graph.nodes.values() if n.kind == "session")
        denials = sum(1 for n in graph.nodes.values() if n.kind == "denial")
        counts = (
            f"{_plural(tools, 'tool call')} · {denials} refused · {_plural(session_calls, 'session call')} "
            f"in {_plural(graph.sessions(), 'MCP session')}"
        )
        heading = f"Run {_short(graph.run)} · {graph.principal or '-'} · {graph.purpose or '-'}"
        body.append(f'<section class="run" id="run{index}"><h2>{_esc(heading)}</h2>')
        body.append(f'<p class="sub">run {_esc(graph.run)} · {_esc(counts)}</p>')
        body.append(f'<div class="picture">{to_svg(graph, index)}</div>')
        body.append(_session_details(graph, index))
        body.append("</section>")
    body.append("</body></html>")
    return "\n".join(body) + "\n"
