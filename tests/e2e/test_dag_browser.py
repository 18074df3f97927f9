"""The demo's ``dag.html`` in a real browser (issue 18): headless Chromium (the Debian package) at 1400 px.

No horizontal overflow, every tool call and refusal drawn inside the window and actually painted (the
element at its centre is that node), drawings not shrunk. Skipped when Chromium is missing, except
under CI (``.ci/run`` installs it), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpclient_auth.ledger import Ledger, LedgerReader
from mcpclient_auth.ledger.render import build_graphs, to_html
from tests.support.browser import chromium, measure
from tests.support.ledger_runs import Actors, write_run

pytestmark = pytest.mark.e2e

WIDTH = 1400


@pytest.fixture(scope="module", autouse=True)
def _browser() -> None:
    if chromium() is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mcpclient_auth.demo.runner import run_demo

    yield run_demo(tmp_path_factory.mktemp("demo"))


def assert_fits_and_shows(measured: dict[str, Any], expected: set[str]) -> None:
    assert measured["innerWidth"] == WIDTH
    assert measured["scrollWidth"] <= measured["clientWidth"], "the page scrolls sideways"
    for svg in measured["svgs"]:
        assert svg["left"] >= 0 and svg["right"] <= WIDTH
    nodes = {node["id"]: node for node in measured["nodes"] if node["kind"] in ("tool", "denial")}
    assert set(nodes) == expected
    for node in nodes.values():
        assert node["visible"] and node["width"] > 0 and node["height"] > 0, node
        assert node["left"] >= 0 and node["right"] <= WIDTH, node
        assert node["painted"], f"{node['title']} is covered or outside the window"


def test_demo_dag_fits_1400_px_and_shows_every_tool_call(demo: Any, tmp_path: Path) -> None:
    entries = list(Ledger.open(demo.ledger).entries())
    tool_calls = {e.jti for e in entries if e.kind == "ect" and e.meta.get("tool")}
    denials = {f"denial-{e.seq}" for e in entries if e.kind == "denial"}
    assert len(tool_calls) == 3  # the demo's server lists erik no salary tool: no refusal to draw
    measured = measure(demo.dag_html, tmp_path, width=WIDTH)
    assert_fits_and_shows(measured, {str(jti) for jti in tool_calls} | denials)
    assert all(svg["scale"] == 1 for svg in measured["svgs"])  # drawn at full size: readable
    titles = [node["title"] for node in measured["nodes"] if node["kind"] == "tool"]
    assert sorted(titles) == ["get_employee_salary", "get_office_locations", "get_office_locations"]
    assert [node["title"] for node in measured["nodes"] if node["kind"] == "session"] == [
        "session 1 · 3 calls",
        "session 1 · 3 calls",
    ]


def test_a_run_with_many_parallel_calls_wraps_inside_the_window(tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    with Ledger(path) as writer:
        wide = write_run(writer, Actors.generate(), parallel_tools=[f"lookup_{i:02d}" for i in range(16)])
    page = tmp_path / "wide.html"
    page.write_text(to_html(build_graphs(LedgerReader(path).entries(), collapse=True)), encoding="utf-8")
    measured = measure(page, tmp_path, width=WIDTH)
    denials = {n["id"] for n in measured["nodes"] if n["kind"] == "denial"}
    assert len(denials) == 1
    assert_fits_and_shows(measured, set(wide.tools) | denials)
