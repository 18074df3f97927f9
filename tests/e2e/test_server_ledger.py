"""Issue 13, finding 4 and acceptance 4: the server's audit ledger is sealed by signed checkpoints.

A real FastMCP server (the demo's HR server under uvicorn) behind ``McpAuthMiddleware(ledger=...,
ledger_key=server_key, checkpoint_every=3, ledger_anchor=FileAnchor(...))`` is driven by a real
signed client (``AgentRun`` + mcp's streamable-HTTP client), stopped (ASGI lifespan shutdown writes
the last checkpoint), started again on the same ledger and used again by the *same* run. Then:

- the untouched ledger verifies with the server key as a role-less key in the trust store; the run's
  mandate is in the file once (on the main branch of 2026-12-01 a restarted server files it again and
  the untouched ledger fails ``duplicate_jti`` — checked with the same steps there);
- deleting or inserting a line before the last checkpoint — even with the rest re-chained so ``seq``
  and ``prev`` agree again — fails ``checkpoint_mismatch``; cutting the file before the last
  checkpoint leaves an ``unsealed_tail`` (exit 3), and cutting it back exactly to an earlier
  checkpoint is caught by the anchor (``anchor_missing``).

Two processes filing the same runs into one ledger (the multi-worker case) are in
``test_two_writer_processes_file_each_mandate_once``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from mcpclient_auth.act import Mandate
from mcpclient_auth.cli import app
from mcpclient_auth.demo.hr import hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import LedgerEntry, encode_line, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.anchor import FileAnchor
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server._audit import ServerAudit
from tests.support.ledger_runs import lines_of, write_lines
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

CAPS = ["mcp.get_office_locations", "mcp.get_employee_salary"]


@dataclass
class Served:
    ledger: Path
    anchors: Path
    trust: TrustStore
    jwks: Path
    run: str
    server_key: Identity
    user: Identity
    agent: Identity


def _serve(trust: TrustStore, port: int, ledger: Path, anchors: Path, server_key: Identity) -> Any:
    return hr_app(
        trust,
        audience=f"http://127.0.0.1:{port}/mcp",
        ledger=ledger,
        ledger_key=server_key,
        checkpoint_every=3,
        ledger_anchor=FileAnchor(anchors),
        # The restarted process has not seen the run's earlier calls: its DAG-shape memory (one
        # process's) would refuse their successors; the ledger, not that memory, is under test here.
        multi_server_runs=True,
    )


async def _calls(run: AgentRun, url: str, tools: list[tuple[str, dict[str, Any]]]) -> None:
    async with (
        run.httpx_client_factory()() as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for name, arguments in tools:
            result = await session.call_tool(name, arguments)
            assert not result.isError


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    base = tmp_path_factory.mktemp("server-ledger")
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    server_key = Identity.generate("ES256", name="hr-server")
    trust = trust_for(issuers=[user], agents=[agent], keys=[server_key])
    server_trust = trust_for(issuers=[user], agents=[agent])  # what the server verifies requests with
    ledger, anchors = base / "server-ledger.jsonl", base / "anchors.jsonl"
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    run = AgentRun(
        agent=agent,
        issuer=user,
        purpose="HR questions",
        capabilities=CAPS,
        endpoint=url,
        ledger=base / "client.jsonl",
        principal=Principal(id="maria"),
    )
    with running(_serve(server_trust, port, ledger, anchors, server_key), port):
        asyncio.run(
            _calls(run, url, [("get_office_locations", {}), ("get_employee_salary", {"employee": "bob"})])
        )
    first_life = lines_of(ledger)
    assert parse_line(first_life[-1]).kind == "checkpoint"  # written at lifespan shutdown
    # The restart: same ledger, same port (so the run's mandate audience still matches), same run.
    with running(_serve(server_trust, port, ledger, anchors, server_key), port):
        asyncio.run(_calls(run, url, [("get_office_locations", {})]))
    run.close()
    jwks = base / "jwks.json"
    jwks.write_text(json.dumps(trust.to_jwks()))
    return Served(ledger, anchors, trust, jwks, run.id, server_key, user, agent)


def entries(path: Path) -> list[LedgerEntry]:
    return [parse_line(line) for line in lines_of(path)]


def copy(served: Served, tmp_path: Path) -> Path:
    path = tmp_path / "copy.jsonl"
    path.write_bytes(served.ledger.read_bytes())
    return path


def rechain(path: Path, kept: list[LedgerEntry]) -> None:
    """Renumber and re-chain, as an attacker without a key can: seq and prev agree again."""
    prev, lines = "", []
    for seq, entry in enumerate(kept, start=1):
        line = encode_line(dataclasses.replace(entry, seq=seq, prev=prev))
        lines.append(line)
        prev = line_hash(line)
    write_lines(path, lines)


def checks(path: Path, served: Served, **options: Any) -> set[str]:
    return set(verify_ledger(path, served.trust, allow_unsealed=True, **options).checks())


def test_restarted_server_keeps_an_untouched_ledger_verifying(served: Served) -> None:
    all_entries = entries(served.ledger)
    mandates = [e for e in all_entries if e.kind == "mandate" and e.run == served.run]
    assert len(mandates) == 1  # filed once, although the second server process never saw it filed
    assert [e.meta.get("tool") for e in all_entries if e.kind == "ect" and e.meta.get("tool")] == [
        "get_office_locations",
        "get_employee_salary",
        "get_office_locations",
    ]
    checkpoints = [e for e in all_entries if e.kind == "checkpoint"]
    assert len(checkpoints) >= 3 and all_entries[-1].kind == "checkpoint"
    report = verify_ledger(served.ledger, served.trust, allow_unsealed=True)
    assert report.ok and report.exit_code == 0 and report.tail is None, report.failures
    points = FileAnchor.read(served.anchors)
    assert [p.seq for p in points] == [e.seq for e in checkpoints]
    report = verify_ledger(served.ledger, served.trust, allow_unsealed=True, anchor=points)
    assert report.ok and report.anchored == len(points)
    # The CLI agrees, with the anchor file as written.
    result = CliRunner().invoke(
        app,
        [
            "ledger",
            "verify",
            str(served.ledger),
            "--jwks",
            str(served.jwks),
            "--allow-unsealed",
            "--anchor",
            str(served.anchors),
        ],
    )
    assert result.exit_code == 0, result.output


def test_checkpoints_need_the_server_key_in_the_trust_store(served: Served) -> None:
    without = trust_for(issuers=[served.user], agents=[served.agent])
    report = verify_ledger(served.ledger, without, allow_unsealed=True)
    assert set(report.checks()) == {"unknown_key"}


def test_a_deleted_line_before_the_last_checkpoint(served: Served, tmp_path: Path) -> None:
    path = copy(served, tmp_path)
    kept = entries(path)
    victim = next(
        i for i, e in enumerate(kept) if e.kind == "ect" and e.meta.get("tool") == "get_employee_salary"
    )
    del kept[victim]
    rechain(path, kept)
    assert "checkpoint_mismatch" in checks(path, served)


def test_an_inserted_denial_before_the_last_checkpoint(served: Served, tmp_path: Path) -> None:
    path = copy(served, tmp_path)
    kept = entries(path)
    where = next(i for i, e in enumerate(kept) if e.kind == "ect")
    fake = dataclasses.replace(
        kept[where], kind="denial", jti=None, token=None, meta={"code": "capability_not_granted"}
    )
    kept.insert(where + 1, fake)
    rechain(path, kept)
    assert "checkpoint_mismatch" in checks(path, served)


def test_truncation_before_the_last_checkpoint(served: Served, tmp_path: Path) -> None:
    path = copy(served, tmp_path)
    lines = lines_of(path)
    kinds = [parse_line(line).kind for line in lines]
    checkpoint_indexes = [i for i, kind in enumerate(kinds) if kind == "checkpoint"]
    # Cut mid-way between two checkpoints: the end is vouched for by nobody.
    cut = checkpoint_indexes[-2] + 2
    assert kinds[cut - 1] != "checkpoint"
    write_lines(path, lines[:cut])
    report = verify_ledger(path, served.trust, allow_unsealed=True)
    assert set(report.checks()) == {"unsealed_tail"} and report.exit_code == 3
    # Cut exactly after an earlier checkpoint: a valid file on its own — the anchor catches it.
    write_lines(path, lines[: checkpoint_indexes[0] + 1])
    assert verify_ledger(path, served.trust, allow_unsealed=True).ok
    report = verify_ledger(path, served.trust, allow_unsealed=True, anchor=FileAnchor.read(served.anchors))
    assert set(report.checks()) == {"anchor_missing"}
    result = CliRunner().invoke(
        app,
        [
            "ledger",
            "verify",
            str(path),
            "--jwks",
            str(served.jwks),
            "--allow-unsealed",
            "--anchor",
            str(served.anchors),
        ],
    )
    assert result.exit_code == 1 and "anchor_missing" in result.output


def test_an_edited_checkpoint_line(served: Served, tmp_path: Path) -> None:
    path = copy(served, tmp_path)
    lines = lines_of(path)
    index = max(i for i, line in enumerate(lines) if parse_line(line).kind == "checkpoint")
    entry = parse_line(lines[index])
    for edited in (
        dataclasses.replace(entry, ts=entry.ts[:-2] + ("1Z" if entry.ts[-2] != "1" else "2Z")),
        dataclasses.replace(entry, jti="x"),
        dataclasses.replace(entry, meta={"note": "all fine"}),
    ):
        lines[index] = encode_line(edited)
        write_lines(path, lines)
        assert "checkpoint_mismatch" in checks(path, served)


# --- two processes, one ledger -----------------------------------------------------------------------


def _file_mandates(path: str, tokens: list[str], barrier: Any) -> None:
    audit = ServerAudit(path)
    barrier.wait(timeout=60)
    for token in tokens:
        mandate = Mandate.decode(token)
        audit.mandate(mandate)
        audit.append(run=mandate.jti, kind="denial", meta={"code": "capability_not_granted"})
    audit.close()


def test_two_writer_processes_file_each_mandate_once(tmp_path: Path) -> None:
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    tokens = [
        Mandate.issue(
            user, agent=agent, audience="http://127.0.0.1/mcp", purpose="p", capabilities=CAPS
        ).token
        for _ in range(40)
    ]
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_file_mandates, args=(str(path), tokens, barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    filed = [e.run for e in entries(path) if e.kind == "mandate"]
    assert sorted(filed) == sorted(Mandate.decode(t).jti for t in tokens)  # each exactly once
    trust = trust_for(issuers=[user], agents=[agent])
    report = verify_ledger(path, trust, allow_unsealed=True, allow_unsealed_tail=True)
    assert report.ok, report.failures[:3]
    assert all(report.runs[Mandate.decode(t).jti].denials == 2 for t in tokens)


def test_close_writes_the_last_checkpoint_and_a_keyless_server_ledger_is_all_tail(tmp_path: Path) -> None:
    from mcpclient_auth.server import McpAuthMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached here
        raise AssertionError

    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    server_key = Identity.generate("ES256", name="hr-server")
    mandate = Mandate.issue(user, agent=agent, audience="http://127.0.0.1/mcp", purpose="p", capabilities=CAPS)
    for key in (server_key, None):
        path = tmp_path / f"{'keyed' if key else 'keyless'}.jsonl"
        middleware = McpAuthMiddleware(
            app, trust=trust_for(issuers=[user], agents=[agent]), audience="http://127.0.0.1/mcp",
            ledger=path, ledger_key=key, checkpoint_every=1000,
        )  # fmt: skip
        assert middleware.audit is not None
        middleware.audit.mandate(mandate)
        middleware.close()
        middleware.close()  # idempotent
        trust = trust_for(issuers=[user], agents=[agent], keys=[server_key])
        report = verify_ledger(path, trust, allow_unsealed=True)
        if key is not None:
            assert [e.kind for e in entries(path)] == ["mandate", "checkpoint"] and report.ok
        else:
            assert set(report.checks()) == {"unsealed_tail"} and report.exit_code == 3
