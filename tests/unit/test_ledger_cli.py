"""`mcpclient-auth ledger verify|show|runs|graph`: output content, exit codes, and the DAG drawings."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.ledger import Ledger, LedgerReader
from mcpclient_auth.ledger.render import build_graphs, to_dot, to_html, to_mermaid
from tests.support.ledger_runs import Actors, WrittenRun, lines_of, write_lines, write_run

runner = CliRunner()


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
            writer,
            actors,
            principal="bob",
            purpose="Plan a trip",
            parallel_tools=("flights", "hotels"),
            join_tool="book",
            denied_tool=None,
        )
    return path, jwks, first, second


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- verify ------------------------------------------------------------------------------------------


def test_verify_ok(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, jwks, first, second = ledger
    code, out, _ = invoke("ledger", "verify", str(path), "--jwks", str(jwks))
    assert code == 0
    assert "OK: every check holds" in out
    assert f"{len(first.entries) + len(second.entries)} entries, 2 runs" in out
    assert f'{first.run}  purpose="Answer HR questions"  principal=alice' in out


def test_verify_tampered_json_lists_every_failure(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, jwks, first, _ = ledger
    lines = lines_of(path)
    write_lines(path, lines[:5] + lines[6:])
    code, out, _ = invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert {"seq_gap", "chain_broken", "seal_mismatch"} <= {f["check"] for f in report["failures"]}
    for failure in report["failures"]:
        assert set(failure) >= {"seq", "jti", "check", "reason"}
    gap = next(f for f in report["failures"] if f["check"] == "seq_gap")
    assert gap["seq"] == 7
    assert next(r for r in report["runs"] if r["run"] == first.run)["verified"] is False
    code, out, _ = invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--jobs", "2")
    assert code == 1
    assert "FAIL seq_gap at seq 7" in out and "FAILED:" in out


def test_verify_usage_errors(tmp_path: Path, ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, jwks, _, _ = ledger
    code, _, err = invoke("ledger", "verify", str(tmp_path / "absent.jsonl"), "--jwks", str(jwks))
    assert code == 2 and "no ledger file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = invoke("ledger", "verify", str(path), "--jwks", str(bad))
    assert code == 2 and "error:" in err


def test_verify_with_unsealed_runs(tmp_path: Path, actors: Actors) -> None:
    path = tmp_path / "open.jsonl"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(actors.jwks()))
    with Ledger(path) as writer:
        write_run(writer, actors, seal=False)
    # The open run is the uncovered tail: exit 3, which only --allow-unsealed-tail accepts.
    code, out, _ = invoke("ledger", "verify", str(path), "--jwks", str(jwks))
    assert code == 3 and "unsealed_tail" in out
    assert invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--allow-unsealed")[0] == 3
    code, out, _ = invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--allow-unsealed-tail")
    assert code == 0 and "unsealed tail:" in out


# --- show and runs -----------------------------------------------------------------------------------


def _rows(out: str) -> list[list[str]]:
    """The table's body rows, split into cells."""
    rows = []
    for line in out.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_show_table(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, first, second = ledger
    code, out, _ = invoke("ledger", "show", str(path))
    assert code == 0
    header = next(line for line in out.splitlines() if "seq" in line and "principal" in line)
    for column in ("seq", "time", "run", "kind", "method/tool", "status", "duration", "principal"):
        assert column in header
    rows = _rows(out)
    assert len(rows) == len(first.entries) + len(second.entries)
    by_seq = {int(row[0]): row for row in rows}
    mandate = by_seq[1]
    assert mandate[2] == first.run[:8] and mandate[3] == "mandate" and mandate[4] == "Answer HR questions"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", mandate[1])
    search = next(row for row in rows if row[3] == "ect" and row[4] == "tools/call search")
    assert search[7] == "alice"
    answer = next(row for row in rows if row[3] == "response" and row[4] == "→ tools/call search")
    assert (answer[5], answer[6], answer[7]) == ("200", "3.2 ms", "alice")
    denial = next(row for row in rows if row[3] == "denial")
    assert (denial[4], denial[5]) == ("tools/call delete_all", "mandate_denied")
    seals = [row for row in rows if row[3] == "seal"]
    assert [row[5] for row in seals] == [
        f"sealed ({len(first.entries) - 1})",
        f"sealed ({len(second.entries) - 1})",
    ]
    assert out.rstrip().endswith(f"{len(rows)} entries")


def test_show_filters(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, _first, second = ledger
    rows = _rows(invoke("ledger", "show", str(path), "--tool", "search")[1])
    assert [(row[3], row[4]) for row in rows] == [
        ("ect", "tools/call search"),
        ("response", "→ tools/call search"),
    ]
    rows = _rows(invoke("ledger", "show", str(path), "--kind", "denial")[1])
    assert len(rows) == 1 and rows[0][7] == "alice"
    rows = _rows(invoke("ledger", "show", str(path), "--run", second.run[:8], "--kind", "ect")[1])
    assert len(rows) == len(second.session) + len(second.parallel) + 1
    assert {row[2] for row in rows} == {second.run[:8]} and {row[7] for row in rows} == {"bob"}
    code, _, err = invoke("ledger", "show", str(path), "--kind", "nonsense")
    assert code == 2 and "unknown kind" in err


def test_show_reports_damage_on_stderr(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, _, _ = ledger
    with open(path, "ab") as stream:
        stream.write(b'{"v":1,"se')
    code, _out, err = invoke("ledger", "show", str(path))
    assert code == 0 and "torn last line" in err


def test_runs_one_line_per_run(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, jwks, first, _second = ledger
    code, out, _ = invoke("ledger", "runs", str(path))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(first.run)
    for part in (
        'purpose="Answer HR questions"',
        "principal=alice",
        "calls=4",
        "session=3",
        "denials=1",
        "status=completed",
        "sealed=yes",
        "verified=-",
    ):
        assert part in lines[0]
    for part in ('purpose="Plan a trip"', "principal=bob", "calls=3", "denials=0"):
        assert part in lines[1]
    code, out, _ = invoke("ledger", "runs", str(path), "--jwks", str(jwks))
    assert code == 0 and out.count("verified=yes") == 2
    lines = lines_of(path)
    write_lines(path, lines[:-1])  # the second run loses its seal: it is now the uncovered tail
    code, out, _ = invoke("ledger", "runs", str(path), "--jwks", str(jwks))
    assert code == 3
    assert "verified=yes" in out.splitlines()[0] and "verified=NO" in out.splitlines()[1]


# --- graph ---------------------------------------------------------------------------------------------


def _edges(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'<path class="edge" data-from="([^"]+)" data-to="([^"]+)"', html))


def _boxes(html: str) -> dict[str, tuple[str, float, float]]:
    found = re.findall(
        r'<g class="node (\w+)" data-id="([^"]+)".*?<rect x="([\d.]+)" y="([\d.]+)"', html, re.S
    )
    return {node_id: (kind, float(x), float(y)) for kind, node_id, x, y in found}


def test_graph_html_draws_fan_out_and_fan_in(
    tmp_path: Path, ledger: tuple[Path, Path, WrittenRun, WrittenRun]
) -> None:
    path, _, first, _ = ledger
    out = tmp_path / "dag.html"
    code, stdout, _ = invoke(
        "ledger", "graph", str(path), "--run", first.run[:8], "--format", "html", "-o", str(out), "--expand-sessions"
    )
    assert code == 0 and "wrote" in stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
    assert "http://" not in html and "https://" not in html  # self-contained: no external reference
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg is not None
    ElementTree.fromstring(svg.group(0))  # well-formed markup
    edges = _edges(html)
    assert first.join is not None
    fan_out = {(first.run, jti) for jti in first.parallel}
    fan_in = {(jti, first.join) for jti in first.parallel}
    assert fan_out <= edges and fan_in <= edges
    assert {(first.run, jti) for jti in first.session} <= edges
    record = next(t for s, t in edges if s == first.join and t.startswith("record-"))
    boxes = _boxes(html)
    # Parallel calls side by side in one layer; the join below them; the record below the join.
    assert len({boxes[jti][2] for jti in first.parallel}) == 1
    assert len({boxes[jti][1] for jti in first.parallel}) == 3
    assert boxes[first.join][2] > boxes[first.parallel[0]][2] > boxes[first.run][2]
    assert boxes[record][2] > boxes[first.join][2]
    kinds = {kind for kind, _, _ in boxes.values()}
    assert kinds == {"mandate", "tool", "session", "denial", "record"}
    denial = next(node_id for node_id, (kind, _, _) in boxes.items() if kind == "denial")
    assert re.search(rf'data-from="{first.run}" data-to="{denial}"[^>]*stroke-dasharray', html)


def test_graph_html_escapes_what_it_shows(tmp_path: Path, actors: Actors) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as writer:
        write_run(
            writer, actors, principal='<script>alert("x")</script>', purpose="see https://example.org/<b>"
        )
    html = to_html(build_graphs(LedgerReader(path).entries()))
    assert "<script" not in html and "<b>" not in html
    assert "http://" not in html and "https://" not in html
    assert "https&#58;//example.org/&lt;b&gt;" in html


def test_graph_mermaid_and_dot(ledger: tuple[Path, Path, WrittenRun, WrittenRun]) -> None:
    path, _, _first, second = ledger
    code, mermaid, _ = invoke("ledger", "graph", str(path), "--format", "mermaid", "--expand-sessions")
    assert code == 0
    assert mermaid.startswith("flowchart TD") and mermaid.count("subgraph run") == 2
    # first run: 3 session + 3 fan-out + 3 fan-in + 1 to the record, and the dotted denial edge;
    # second run: 3 session + 2 fan-out + 2 fan-in + 1 to the record
    assert mermaid.count(" --> ") == 10 + 8 and mermaid.count(" -.-> ") == 1
    assert '"search<br/>' in mermaid and "class " in mermaid
    code, dot, _ = invoke("ledger", "graph", str(path), "--format", "dot", "--run", second.run, "--expand-sessions")
    assert code == 0
    assert dot.startswith("digraph ledger {") and dot.count("subgraph cluster_") == 1
    assert dot.count(" -> ") == 3 + 2 + 2 + 1 and "style=dashed" not in dot
    assert "Plan a trip" in dot and "Answer HR questions" not in dot
    code, _, err = invoke("ledger", "graph", str(path), "--format", "dot", "--run", "zzzz")
    assert code == 2 and "no run" in err


def test_graph_of_a_damaged_run_still_draws(tmp_path: Path, actors: Actors) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as writer:
        run = write_run(writer, actors)
    lines = lines_of(path)
    write_lines(path, [line for index, line in enumerate(lines) if index != 7])  # a parallel call vanished
    graphs = build_graphs(LedgerReader(path).entries())
    kinds = [node.kind for node in graphs[0].nodes.values()]
    assert "unknown" in kinds  # the join's missing predecessor is drawn, flagged
    assert to_mermaid(graphs) and to_dot(graphs) and run.run in to_html(graphs)


def test_graph_output_never_follows_a_symlink(
    tmp_path: Path, ledger: tuple[Path, Path, WrittenRun, WrittenRun]
) -> None:
    path = ledger[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "dag.html"
    link.symlink_to(victim)
    code, _, err = invoke("ledger", "graph", str(path), "--format", "html", "-o", str(link))
    assert code == 2 and "cannot write" in err and victim.read_text() == "keep me"


def test_verify_jobs_gives_the_same_verdict_and_output_as_jobs_1(tmp_path: Path, actors: Actors) -> None:
    """Issue #16: `--jobs N` is only faster — same exit code, same text, same JSON, byte for byte —
    on a ledger with many runs and failures of every layer (line, token, run, tail)."""
    from tests.unit.test_ledger_verify import RunBuilder

    path = tmp_path / "mixed.jsonl"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(actors.jwks()))
    with Ledger(path) as writer:
        for index in range(12):
            write_run(writer, actors, principal=f"user{index % 3}")
        rogue = RunBuilder(writer, actors)
        rogue.ect("mcp.delete_all")  # outside the mandate's cap
        rogue.record()
        rogue.seal()
        for index in range(5):
            write_run(writer, actors, principal="carol")
        write_run(writer, actors, seal=False)
    lines = lines_of(path)
    bent = next(i for i in range(40, len(lines)) if b'"kind":"ect"' in lines[i])
    lines[bent] = lines[bent].replace(b'"kind":"ect"', b'"kind": "ect"')  # not canonical
    del lines[70]  # a gap in seq and the chain
    write_lines(path, lines)
    outputs = {}
    for jobs in ("1", "2", "3"):
        text = invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--jobs", jobs)
        as_json = invoke("ledger", "verify", str(path), "--jwks", str(jwks), "--jobs", jobs, "--json")
        outputs[jobs] = (text[0], text[1], as_json[0], as_json[1])
    assert outputs["1"][0] == 1 and "FAILED:" in outputs["1"][1]
    checks = {f["check"] for f in json.loads(outputs["1"][3])["failures"]}
    assert {"line_malformed", "seq_gap", "chain_broken", "cap_violation", "unsealed_tail"} <= checks
    assert outputs["2"] == outputs["1"]
    assert outputs["3"] == outputs["1"]
