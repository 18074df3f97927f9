"""The conformance harness's verdict logic (conformance/harness.py): what fails a run, and the baseline."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_harness", ROOT / "conformance" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def outcome(h: ModuleType, scenario: str, passed: bool, variant: str = "sdk") -> object:
    return h.Outcome(scenario, "a", variant, passed, 1.0, [] if passed else ["some-check"])


def test_unexpected_failures_and_stale_entries_fail_the_run() -> None:
    h = harness()
    baseline = {"stack-a-sdk": {"auth/dpop": "needs DPoP proofs per request"}}
    results = [
        outcome(h, "auth/dpop", False),  # expected
        outcome(h, "initialize", True),  # fine
        outcome(h, "tools_call", False),  # unexpected
    ]
    unexpected, stale = h.judge(results, baseline)
    assert unexpected == ["stack-a-sdk: tools_call (some-check)"] and stale == []
    unexpected, stale = h.judge([outcome(h, "auth/dpop", True)], baseline)
    assert unexpected == [] and len(stale) == 1 and "auth/dpop" in stale[0]
    # a baseline is per stack and variant: the plain column's failures are not excused by the SDK's
    unexpected, _ = h.judge([outcome(h, "auth/dpop", False, "plain")], baseline)
    assert unexpected == ["stack-a-plain: auth/dpop (some-check)"]


def test_every_committed_baseline_entry_has_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness()
    baseline = h.load_baseline()
    assert set(baseline) <= {"stack-a-sdk", "stack-a-plain", "stack-b-sdk", "stack-b-plain"}
    assert all(len(reason) >= 10 for entries in baseline.values() for reason in entries.values())
    bare = tmp_path / "expected-failures.toml"
    bare.write_text('[stack-a-sdk]\n"auth/dpop" = ""\n')
    monkeypatch.setattr(h, "BASELINE", bare)
    with pytest.raises(SystemExit, match="needs a reason"):
        h.load_baseline()


def test_the_table_counts_passes_per_column() -> None:
    h = harness()
    rows = [outcome(h, "initialize", True), outcome(h, "auth/dpop", False)]
    text = h.table(rows, ["stack-a-sdk"], ["initialize", "auth/dpop"])
    assert "| `initialize` | pass |" in text and "| `auth/dpop` | **fail** |" in text
    assert text.endswith("| **passed** | 1/2 |")


def test_an_sdk_scenario_counts_only_under_a_verified_signed_run() -> None:
    h = harness()
    good = {"ok": True, "ledger_ok": True, "entries": 9, "verified": 3, "rejected": 0}
    assert h.signed_run_problem([]) == "no signed run"
    assert h.signed_run_problem([good]) is None
    assert h.signed_run_problem([good, {**good, "ok": False, "rejected": 1}]) == (
        "McpRequestVerifier rejected 1 request(s) to the MCP endpoint"
    )
    assert h.signed_run_problem([{**good, "ok": False, "ledger_ok": False}]) == "the run's ledger does not verify"
    assert h.signed_run_problem([{**good, "verified": 0}]) == "no request to the MCP endpoint was signed"


def test_the_baseline_never_excuses_a_signed_run_that_does_not_hold() -> None:
    # Acceptance 2 of issue 15: in every SDK scenario, also one expected to fail, the ledger verifies
    # and McpRequestVerifier accepted every request; the baseline lists scenario failures, not that.
    h = harness()
    baseline = {"stack-a-sdk": {"auth/dpop": "needs DPoP proofs per request"}}
    expected = outcome(h, "auth/dpop", False)
    assert h.judge([expected], baseline) == ([], [])
    rejected = outcome(h, "auth/dpop", False)
    rejected.signed_problem = "McpRequestVerifier rejected 1 request(s) to the MCP endpoint"
    rejected.note = rejected.signed_problem
    unexpected, _ = h.judge([rejected], baseline)
    assert unexpected == ["stack-a-sdk: auth/dpop (some-check)"]
    summary = h.signed_summary([expected, rejected, outcome(h, "initialize", True, "plain")])
    assert summary.startswith("signed runs: 1/2 SDK scenarios")


def test_ci_runs_the_suite_for_both_stacks_and_enforces_the_baseline() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    [line] = [line for line in script.splitlines() if "conformance/run.sh" in line and not line.startswith("#")]
    command = line + script.split(line, 1)[1].split("\n", 2)[1]  # the continuation line
    assert "--python-a" in command and "--python-b" in command  # both stacks, CI's own environments
    assert "--no-baseline" not in command and "--stack" not in command and "--scenario" not in command
    assert not re.search(r"https?://", script)  # no registry (nor any other) host is named
