"""The conformance harness's verdict logic (conformance/harness.py): what fails a run, and the baseline."""

from __future__ import annotations

import importlib.util
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


def test_an_sdk_scenario_counts_only_under_a_verified_signed_run(tmp_path: Path) -> None:
    h = harness()
    assert h.signed_run_problem(tmp_path) == "no signed run"
    (tmp_path / "signed-run-1.json").write_text('{"ok": true, "entries": 9, "verified": 3, "rejected": 0}')
    assert h.signed_run_problem(tmp_path) is None
    (tmp_path / "signed-run-2.json").write_text('{"ok": false, "entries": 9, "verified": 2, "rejected": 1}')
    assert h.signed_run_problem(tmp_path) == "ledger or request verification failed"
