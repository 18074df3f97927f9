"""The DAG picture tells the story (issue 18): session plumbing collapsed to one node per MCP session,
the runs summarised on top with their verdicts, wide runs wrapped, and a tree per run in ``ledger show``."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.ledger import Ledger, LedgerEntry, LedgerReader
from mcpclient_auth.ledger.render import (
    MAX_PER_ROW,
    build_graphs,
    collapse_sessions,
    layout,
    run_trees,
    session_summary,
    to_html,
)
from tests.support.ledger_runs import Actors, WrittenRun, lines_of, write_lines, write_run

runner = CliRunner()
TIMES = "\u00d7"


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate()


@pytest.fixture
def ledger(tmp_path: Path, actors: Actors) -> tuple[Path, Path, WrittenRun, WrittenRun]:
    path = tmp_path / "ledger.jsonl"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(actors.jwks()))
    with Ledger(path) as writer:
        first = write_run(writer, actors, principal="alice", purpose="Answer HR questions")
        second = write_run(
            writer, actors, principal="bob", purpose="Plan a trip", parallel_tools=("flights", "hotels"),
            join_tool="book", denied_tool=None,
        )
    return path, jwks, first, second


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def boxes(html: str) -> dict[str, tuple[str, float, float]]:
    found = re.findall(r'<g class="node (\w+)" data-id="([^"]+)".*?<rect x="([\d.]+)" y="([\d.]+)"', html, re.S)
    return {node_id: (kind, float(x), float(y)) for kind, node_id, x, y in found}


def edges(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'<path class="edge" data-from="([^"]+)" data-to="([^"]+)"', html))


def section(html: str, index: int) -> str:
    match = re.search(rf'<section class="run" id="run{index}">.*?</section>', html, re.S)
    assert match is not None
    return match.group(0)


def test_html_collapses_each_session_into_one_expandable_node(
    tmp_path: Path, ledger: tuple[Path, Path, WrittenRun, WrittenRun]
) -> None:
    path, _, first, _ = ledger
    out = tmp_path / "dag.html"
    code, _, _ = invoke("ledger", "graph", str(path), "--format", "html", "-o", str(out))
    assert code == 0
    html = out.read_text()
    assert "<script" not in html and "://" not in html
    run0 = section(html, 0)
    ElementTree.fromstring(re.search(r"<svg.*?</svg>", run0, re.S).group(0))  # type: ignore[union-attr]
    nodes = boxes(run0)
    # the story: mandate, the tool calls, the refusal, the record — and one node for the session
    assert sorted(kind for kind, _, _ in nodes.values()) == sorted(
        ["mandate", "session", "tool", "tool", "tool", "tool", "denial", "record"]
    )
    assert not set(first.session) & set(nodes)  # no node per session call
    drawn = edges(run0)
    assert (first.run, "session-1") in drawn
    assert {(first.run, jti) for jti in first.parallel} | {(jti, first.join) for jti in first.parallel} <= drawn
    # expandable without a script: the session's calls in a <details> element the node links to
    details = re.search(r'<details class="session" id="run0-session-1">(.*?)</details>', run0, re.S)
    assert details is not None and 'href="#run0-session-1"' in run0
    assert re.findall(r"<tr><td>\d+</td><td>([^<]+)</td>", details.group(1)) == [
        "initialize", "notifications/initialized", "tools/list",
    ]
    assert "<summary>session 1 · 3 calls: initialize, notifications/initialized, tools/list<" in details.group(1)
    # the uncollapsed view stays one flag away
    code, _, _ = invoke("ledger", "graph", str(path), "--format", "html", "-o", str(out), "--expand-sessions")
    assert code == 0 and set(first.session) <= set(boxes(section(out.read_text(), 0)))


def test_sessions_are_split_at_each_initialize_and_counted() -> None:
    run = "r" * 36

    def entry(seq: int, kind: str, jti: str | None = None, **meta: object) -> LedgerEntry:
        return LedgerEntry(1, seq, "2026-12-01T10:00:00.000000Z", run, kind, jti, None, dict(meta))

    url = "http://127.0.0.1:1/mcp"
    calls = [
        ("initialize", None), ("notifications/initialized", None), ("tools/list", None),
        ("initialize", None), ("notifications/initialized", None), ("tools/call", "search"), ("tools/list", None),
        ("initialize", None), ("tools/call", "search"), ("tools/list", None), ("tools/list", None),
    ]
    entries = [entry(1, "mandate", run)]
    for seq, (method, tool) in enumerate(calls, start=2):
        action = f"mcp.{tool}" if tool else "mcp.rpc." + method.replace("/", ".")
        meta = {"method": method, "url": url, "action": action, **({"tool": tool} if tool else {})}
        entries.append(entry(seq, "ect", f"j{seq}", **meta))
        entries.append(entry(seq, "response", f"j{seq}", status=500 if seq == 12 else 200))
    (graph,) = build_graphs(entries)
    assert graph.sessions() == 3
    collapsed = collapse_sessions(graph)
    sessions = sorted((n for n in collapsed.nodes.values() if n.kind == "session"), key=lambda n: n.seq)
    assert [session_summary(n.calls) for n in sessions] == [
        "initialize, notifications/initialized, tools/list",
        "initialize, notifications/initialized, tools/list",
        f"initialize, tools/list {TIMES}2",
    ]
    assert sessions[2].title == "session 3 · 3 calls · 1 failed"
    assert collapsed.called() == {"search": 2}
    assert [n.kind for n in collapsed.nodes.values()].count("tool") == 2
    assert graph.nodes["j2"].kind == "session"  # the original graph is left as it was


def test_mermaid_and_dot_collapse_too(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, _, second = ledger
    code, mermaid, _ = invoke("ledger", "graph", str(path), "--format", "mermaid")
    assert code == 0
    # per run: one edge to its session node instead of one per session call
    assert mermaid.count(" --> ") == (1 + 3 + 3 + 1) + (1 + 2 + 2 + 1) and mermaid.count(" -.-> ") == 1
    assert mermaid.count('"session 1 · 3 calls<br/>initialize, notifications/initialized, tools/list"') == 2
    assert '"initialize<br/>' not in mermaid
    code, dot, _ = invoke("ledger", "graph", str(path), "--format", "dot", "--run", second.run)
    assert code == 0 and dot.count(" -> ") == 1 + 2 + 2 + 1 and "session 1 · 3 calls" in dot


def test_runs_are_summarised_on_top_with_their_verdict(
    tmp_path: Path, ledger: tuple[Path, Path, WrittenRun, WrittenRun]
) -> None:
    path, jwks, first, second = ledger
    out = tmp_path / "dag.html"

    def summary_rows() -> list[list[str]]:
        html = out.read_text()
        table = re.search(r'<table class="runs">.*?</table>', html, re.S)
        assert table is not None and html.index('<table class="runs">') < html.index("<svg")
        rows = re.findall(r"<tr>(<td>.*?)</tr>", table.group(0), re.S)
        cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
        return [[unescape(re.sub(r"<[^>]+>", " ", cell)).split() for cell in row] for row in cells]

    assert invoke("ledger", "graph", str(path), "--format", "html", "-o", str(out))[0] == 0
    alice, bob = summary_rows()
    assert alice[0] == [first.run[:8]] and alice[1][0] == "alice"
    assert alice[3] == ["search", "lookup", "fetch", "summarize"]  # granted
    assert alice[4] == ["search", "lookup", "fetch", "summarize"]  # called
    assert alice[5] == ["delete_all", "(mandate_denied)"]  # refused before sending
    assert alice[6] == ["completed,", "sealed"] and alice[7] == ["not", "checked"]
    assert bob[5] == ["-"]

    assert invoke("ledger", "graph", str(path), "--format", "html", "-o", str(out), "--jwks", str(jwks))[0] == 0
    assert [row[7] for row in summary_rows()] == [["verified"], ["verified"]]
    write_lines(path, lines_of(path)[:-1])  # the second run loses its seal
    assert invoke("ledger", "graph", str(path), "--format", "html", "-o", str(out), "--jwks", str(jwks))[0] == 0
    verdicts = [row[7] for row in summary_rows()]
    assert verdicts[0] == ["verified"] and verdicts[1] == ["FAILED:", "unsealed_tail"]
    code, _, _ = invoke(
        "ledger", "graph", str(path), "--format", "html", "-o", str(out), "--jwks", str(jwks), "--allow-unsealed"
    )
    assert code == 0 and [row[7] for row in summary_rows()] == [["verified"], ["verified"]]
    assert second.run[:8] in out.read_text()


def test_a_wide_run_wraps_instead_of_scrolling(tmp_path: Path, actors: Actors) -> None:
    path = tmp_path / "wide.jsonl"
    tools = tuple(f"tool_{i:02d}" for i in range(15))
    with Ledger(path) as writer:
        wide = write_run(writer, actors, parallel_tools=tools, join_tool="merge")
    (graph,) = build_graphs(LedgerReader(path).entries(), collapse=True)
    placed, width, _height = layout(graph)
    assert width <= 1300  # fits a 1400 px window without scaling
    rows = {round(placed[jti].y) for jti in wide.parallel}
    assert len(rows) == -(-len(tools) // MAX_PER_ROW)  # 15 parallel calls on 3 rows
    spots = {(placed[jti].x, placed[jti].y) for jti in wide.parallel}
    assert len(spots) == len(tools)  # none drawn on top of another
    assert wide.join is not None and placed[wide.join].y > max(placed[jti].y for jti in wide.parallel)
    html = to_html([graph])
    svg_width = float(re.search(r'<svg class="dag" width="([\d.]+)"', html).group(1))  # type: ignore[union-attr]
    assert svg_width == width and "max-width: 100%" in html
    # 16 granted and 16 called tools: five shown in the summary row, the rest folded
    assert html.count("<summary>11 more</summary>") == 2


def test_show_tree_per_run_collapsed_or_expanded(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, first, second = ledger
    code, out, _ = invoke("ledger", "show", str(path), "--tree")
    assert code == 0
    assert f"run {first.run} · alice · Answer HR questions · completed, sealed" in out
    assert f"run {second.run} · bob · Plan a trip" in out
    assert out.count("session 1 · 3 calls: initialize, notifications/initialized, tools/list") == 2
    assert "refused before sending: delete_all (mandate_denied)" in out
    assert "tools/call summarize → 200 · 3.2 ms · after search, lookup, fetch" in out
    assert "initialize → 200" not in out
    code, out, _ = invoke("ledger", "show", str(path), "--tree", "--expand-sessions", "--run", first.run[:8])
    assert code == 0 and "initialize → 200" in out and "notifications/initialized → 202" in out
    assert second.run not in out
    code, _, err = invoke("ledger", "show", str(path), "--tree", "--kind", "ect")
    assert code == 2 and "--tree" in err
    trees = run_trees(build_graphs(LedgerReader(path).entries(), collapse=True))
    assert [child.kind for child in trees[0].children] == [
        "mandate", "session", "tool", "tool", "tool", "tool", "denial", "record",
    ]
