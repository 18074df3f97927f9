"""Human views of a ledger: table rows, one-line run summaries, and pictures of a run's DAG.

    rows = list(table_rows(reader.entries(), tool="search"))      # for `ledger show`
    run_line(summary)                                            # for `ledger runs`
    graphs = build_graphs(reader.entries(), run=run_id)          # one RunGraph per run
    to_mermaid(graphs); to_dot(graphs); to_html(graphs)          # `ledger graph --format ...`

The drawing is laid out here, without Graphviz or JavaScript: nodes are layered by their longest
path from the mandate (so a chain goes down, parallel calls sit side by side — fan-out — and the
call that joins them sits below with one edge from each — fan-in), ordered by ``seq`` inside a
layer. The HTML file is self-contained: inline CSS and SVG, no script, no external reference.

Tokens are read here **without** verifying them: these are views. Use ``verify_ledger`` to check.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import McpClientAuthError
from .format import NO_RUN, LedgerEntry
from .reader import RunSummary

__all__ = [
    "NODE_KINDS",
    "Edge",
    "Node",
    "Row",
    "RunGraph",
    "build_graphs",
    "run_line",
    "table_rows",
    "to_dot",
    "to_html",
    "to_mermaid",
]

_SESSION_PREFIX = "mcp.rpc."


def _claims(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    from .. import jose

    try:
        return jose.decode(token).claims
    except McpClientAuthError:
        return {}


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
            purpose = _claims(entry.token).get("task", {})
            label = str(purpose.get("purpose", "")) if isinstance(purpose, dict) else ""
        elif entry.kind == "record":
            claims = _claims(entry.token)
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


@dataclass(slots=True)
class Node:
    id: str
    kind: str
    title: str
    detail: str
    seq: int
    layer: int = 0
    tooltip: str = ""


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

    def _add_edge(self, source: str, target: str, *, dashed: bool = False) -> None:
        if source not in self.nodes:
            # A predecessor that is not in the run: draw it, flagged, rather than drop the edge.
            self.nodes[source] = Node(source, "unknown", "unknown pred", _short(source), -1, 0, source)
        self.edges.append(Edge(source, target, dashed))
        self.nodes[target].layer = max(self.nodes[target].layer, self.nodes[source].layer + 1)


def build_graphs(entries: Iterable[LedgerEntry], *, run: str | None = None) -> list[RunGraph]:
    """One :class:`RunGraph` per run (or only runs whose id starts with ``run``), in file order."""
    graphs: dict[str, RunGraph] = {}
    for entry in entries:
        if entry.run == NO_RUN or (run is not None and not entry.run.startswith(run)):
            continue
        graph = graphs.get(entry.run)
        if graph is None:
            graph = graphs[entry.run] = RunGraph(entry.run)
        _ADD[entry.kind](graph, entry)
    return list(graphs.values())


def _add_mandate(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = _claims(entry.token)
    task = claims.get("task")
    graph.purpose = str(task.get("purpose", "")) if isinstance(task, dict) else ""
    principal = entry.meta.get("principal")
    if isinstance(principal, str):
        graph.principal = principal
    caps = [c.get("action") for c in claims.get("cap", []) if isinstance(c, dict)]
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
        f"purpose: {graph.purpose}\ncapabilities: {', '.join(str(c) for c in caps)}",
    )


def _add_ect(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = _claims(entry.token)
    action = claims.get("exec_act") or entry.meta.get("action") or ""
    jti = entry.jti or str(claims.get("jti", f"ect-{entry.seq}"))
    is_tool = isinstance(action, str) and bool(action) and not action.startswith(_SESSION_PREFIX)
    tool = entry.meta.get("tool")
    title = str(tool) if is_tool and tool else str(entry.meta.get("method") or action)
    if principal := entry.meta.get("principal"):
        graph.principal = graph.principal or str(principal)
    graph.nodes[jti] = Node(
        jti,
        "tool" if is_tool else "session",
        title,
        f"seq {entry.seq} · {_short(jti)}",
        entry.seq,
        1,
        f"{'tool call' if is_tool else 'session call'} {jti}\naction: {action}\n"
        f"seq: {entry.seq}\nts: {entry.ts}",
    )
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
    node.detail = f"{node.detail} · {status}" if status is not None else node.detail
    node.tooltip += f"\nresponse: {status}" + (f" in {duration}" if duration else "")


def _add_denial(graph: RunGraph, entry: LedgerEntry) -> None:
    node_id = f"denial-{entry.seq}"
    tool = entry.meta.get("tool") or entry.meta.get("method") or "?"
    code = entry.meta.get("code", "denied")
    graph.nodes[node_id] = Node(
        node_id,
        "denial",
        f"denied: {tool}",
        f"seq {entry.seq} · {code}",
        entry.seq,
        1,
        f"denial at seq {entry.seq}\naction: {entry.meta.get('action', '?')}\ncode: {code}",
    )
    graph._add_edge(graph.run, node_id, dashed=True)


def _add_record(graph: RunGraph, entry: LedgerEntry) -> None:
    claims = _claims(entry.token)
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

_NODE_W, _NODE_H = 168, 46
_GAP_X, _GAP_Y = 24, 58
_MARGIN = 20


def _esc(text: object) -> str:
    # Also escape ":" so that no URL-looking text (an endpoint in a tooltip) appears literally: the
    # file must be self-contained, and a checker can then simply search for "://".
    return html.escape(str(text), quote=True).replace(":", "&#58;")


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Placed:
    node: Node
    x: float
    y: float


def layout(graph: RunGraph) -> tuple[dict[str, _Placed], float, float]:
    """Positions (top-left corners) and the drawing's width and height."""
    layers = graph.layers()
    widest = max((len(layer) for layer in layers), default=1)
    width = 2 * _MARGIN + widest * _NODE_W + (widest - 1) * _GAP_X
    placed: dict[str, _Placed] = {}
    for depth, layer in enumerate(layers):
        row_width = len(layer) * _NODE_W + (len(layer) - 1) * _GAP_X
        left = (width - row_width) / 2
        y = _MARGIN + depth * (_NODE_H + _GAP_Y)
        for index, node in enumerate(layer):
            placed[node.id] = _Placed(node, left + index * (_NODE_W + _GAP_X), y)
    height = 2 * _MARGIN + len(layers) * _NODE_H + max(len(layers) - 1, 0) * _GAP_Y
    return placed, width, height


def to_svg(graph: RunGraph, index: int = 0) -> str:
    """An inline ``<svg>`` drawing of one run (no namespace URL needed inside HTML)."""
    placed, width, height = layout(graph)
    marker = f"arrow{index}"
    parts = [
        f'<svg class="dag" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="execution DAG of run {_esc(graph.run)}">',
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/>'
        "</marker></defs>",
    ]
    for edge in graph.edges:
        source, target = placed[edge.source], placed[edge.target]
        x1, y1 = source.x + _NODE_W / 2, source.y + _NODE_H
        x2, y2 = target.x + _NODE_W / 2, target.y
        bend = (y2 - y1) / 2
        dash = ' stroke-dasharray="5,4"' if edge.dashed else ""
        parts.append(
            f'<path class="edge" data-from="{_esc(edge.source)}" data-to="{_esc(edge.target)}" '
            f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="#495057" stroke-width="1.4"{dash} marker-end="url(#{marker})"/>'
        )
    for spot in placed.values():
        node = spot.node
        fill, stroke = NODE_KINDS[node.kind]
        radius = 22 if node.kind == "mandate" else 7
        center = spot.x + _NODE_W / 2
        parts.append(
            f'<g class="node {node.kind}" data-id="{_esc(node.id)}" data-kind="{node.kind}">'
            f"<title>{_esc(node.tooltip or node.id)}</title>"
            f'<rect x="{spot.x:.1f}" y="{spot.y:.1f}" width="{_NODE_W}" height="{_NODE_H}" rx="{radius}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>'
            f'<text x="{center:.1f}" y="{spot.y + 19:.1f}" class="t">{_esc(_clip(node.title))}</text>'
            f'<text x="{center:.1f}" y="{spot.y + 35:.1f}" class="d">{_esc(_clip(node.detail, 30))}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #212529; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 32px; }
table.summary { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
table.summary td { padding: 2px 12px 2px 0; } table.summary td:first-child { color: #868e96; }
.dag text { font-size: 12px; text-anchor: middle; } .dag text.d { font-size: 10px; fill: #495057; }
.dag text.t { font-weight: 600; }
.legend span { display: inline-block; padding: 2px 10px; margin-right: 8px; border-radius: 6px;
  font-size: 12px; border: 1px solid; }
.scroll { overflow-x: auto; border: 1px solid #e9ecef; border-radius: 6px; background: #fff; }
"""


def to_html(graphs: Sequence[RunGraph], *, title: str = "mcpclient-auth ledger") -> str:
    """One self-contained HTML page: per run a summary and its DAG as inline SVG."""
    legend = "".join(
        f'<span style="background:{fill};border-color:{stroke}">{_esc(kind)}</span>'
        for kind, (fill, stroke) in NODE_KINDS.items()
        if kind != "unknown"
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="legend">{legend} <span style="border-style:dashed">denied (dashed edge)</span></p>',
    ]
    if not graphs:
        body.append("<p>No runs in this ledger.</p>")
    for index, graph in enumerate(graphs):
        tools = sum(1 for n in graph.nodes.values() if n.kind == "tool")
        session = sum(1 for n in graph.nodes.values() if n.kind == "session")
        denials = sum(1 for n in graph.nodes.values() if n.kind == "denial")
        rows = [
            ("run", graph.run),
            ("purpose", graph.purpose or "-"),
            ("principal", graph.principal or "-"),
            ("calls", f"{tools} tool calls, {session} session calls, {denials} denials"),
            ("status", f"{graph.status}, {'sealed' if graph.sealed else 'not sealed'}"),
        ]
        body.append(f'<section class="run" id="run{index}"><h2>Run {_esc(_short(graph.run))}</h2>')
        body.append(
            '<table class="summary">'
            + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
            + "</table>"
        )
        body.append(f'<div class="scroll">{to_svg(graph, index)}</div></section>')
    body.append("</body></html>")
    return "\n".join(body) + "\n"
