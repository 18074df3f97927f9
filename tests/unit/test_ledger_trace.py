"""The trace id an ``ect`` ledger entry names (``meta.trace``, issue #17) must be the one its signed ECT
names (``ect_ext.trace.trace_id``): the line an auditor follows to a trace cannot point elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.ledger import Ledger, verify_ledger
from tests.support.ledger_runs import AUDIENCE, URL, Actors

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def write_traced_run(path: Path, actors: Actors, ledger_trace: str | None) -> None:
    mandate = Mandate.issue(
        actors.user, agent=actors.agent, audience=AUDIENCE, purpose="trace", capabilities=["mcp.search"]
    )
    run = mandate.jti
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'
    ect = ExecutionContextToken.mint(
        actors.agent, audience=AUDIENCE, exec_act="mcp.search", pred=[run], wid=run,
        inp_hash=sha256_b64url(body), ect_ext={"trace": {"trace_id": TRACE, "span_id": SPAN}},
    )  # fmt: skip
    meta = {"method": "tools/call", "tool": "search", "id": 1, "url": URL, "action": "mcp.search",
            "principal": mandate.iss}  # fmt: skip
    if ledger_trace is not None:
        meta["trace"] = ledger_trace
    with Ledger(path) as ledger:
        ledger.append(run=run, kind="mandate", jti=run, token=mandate.token, meta={"principal": mandate.iss})
        ledger.append(run=run, kind="ect", jti=ect.jti, token=ect.token, meta=meta)
        ledger.append(run=run, kind="response", jti=ect.jti, meta={"status": 200, "out_hash": sha256_b64url(b"{}"),
                                                                   "duration_ms": 1.0, "id": 1, "bytes": 2})  # fmt: skip
        record = ExecutionRecord.issue(
            actors.agent, mandate, exec_act="mcp.search", pred=[ect.jti], out_hash=sha256_b64url(b"x"),
            status="completed",
        )  # fmt: skip
        ledger.append(run=run, kind="record", jti=run, token=record.token, meta={"status": "completed"})
        ledger.seal(run, actors.agent)


def test_the_entry_names_its_ects_trace(tmp_path: Path) -> None:
    actors = Actors.generate()
    write_traced_run(tmp_path / "ok.jsonl", actors, TRACE)
    report = verify_ledger(tmp_path / "ok.jsonl", actors.trust)
    assert report.ok, report.failures
    write_traced_run(tmp_path / "untraced.jsonl", actors, None)  # no trace recorded: nothing to compare
    assert verify_ledger(tmp_path / "untraced.jsonl", actors.trust).ok


def test_an_entry_pointing_at_another_trace_fails(tmp_path: Path) -> None:
    actors = Actors.generate()
    write_traced_run(tmp_path / "lie.jsonl", actors, "0" * 31 + "1")
    report = verify_ledger(tmp_path / "lie.jsonl", actors.trust)
    assert not report.ok
    assert [(f.check, "trace" in f.reason) for f in report.failures] == [("entry_mismatch", True)]
    assert json.dumps(report.to_dict())  # serialisable as ever
