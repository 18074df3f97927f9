"""The request-path samples run end to end and leave a verifying ledger (issue 3, acceptance 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sample", ["plain_session.py", "langgraph_agent.py"])
def test_sample_runs(sample: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SAMPLES / sample), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ledger verified: True" in done.stdout
    assert "Traceback" not in done.stderr
    assert (tmp_path / "ledger.jsonl").stat().st_mode & 0o777 == 0o600
