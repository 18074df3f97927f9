"""verify_ledger: clean ledgers pass; every kind of tampering is caught by its own named check."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import CHECKS, Ledger, Report, encode_line, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.format import GENESIS_PREV
from tests.support.ledger_runs import AUDIENCE, Actors, WrittenRun, lines_of, write_lines, write_run
from tests.support.trust import trust_for


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate()


def checks(report: Report) -> set[str]:
    return {failure.check for failure in report.failures}


def one_run(tmp_path: Path, actors: Actors, **kw: object) -> tuple[Path, WrittenRun]:
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        run = write_run(ledger, actors, **kw)  # type: ignore[arg-type]
    return path, run


def rechain(lines: list[bytes]) -> list[bytes]:
    """What an attacker does after editing: renumber and recompute every prev."""
    out: list[bytes] = []
    prev = GENESIS_PREV
    for seq, line in enumerate(lines, start=1):
        entry = dataclasses.replace(parse_line(line), seq=seq, prev=prev)
        encoded = encode_line(entry)
        out.append(encoded)
        prev = line_hash(encoded)
    return out


def index_of(lines: list[bytes], predicate: object) -> int:
    for index, line in enumerate(lines):
        if predicate(parse_line(line)):  # type: ignore[operator]
            return index
    raise AssertionError("no such line")


class RunBuilder:
    """Writes a run entry by entry, so a test can put exactly one wrong thing in an otherwise valid,
    correctly chained and sealed ledger."""

    def __init__(
        self,
        ledger: Ledger,
        actors: Actors,
        *,
        caps: tuple[str, ...] = ("mcp.search", "mcp.fetch"),
        mandate: bool = True,
    ) -> None:
        self.ledger, self.actors = ledger, actors
        self.mandate = Mandate.issue(
            actors.user,
            agent=actors.agent,
            audience=AUDIENCE,
            purpose="Find offices",
            capabilities=list(caps),
            iss="alice",
        )
        self.run = self.mandate.jti
        self.last: list[str] = [self.run]
        if mandate:
            ledger.append(
                run=self.run,
                kind="mandate",
                jti=self.run,
                token=self.mandate.token,
                meta={"principal": self.mandate.principal},
            )

    def ect(
        self,
        action: str = "mcp.search",
        pred: list[str] | None = None,
        *,
        signer: Identity | None = None,
        jti: str | None = None,
        now: float | None = None,
        respond: bool = True,
    ) -> ExecutionContextToken:
        ect = ExecutionContextToken.mint(
            signer or self.actors.agent,
            audience=AUDIENCE,
            exec_act=action,
            pred=self.last if pred is None else pred,
            wid=self.run,
            jti=jti,
            now=now,
        )
        tool = action.removeprefix("mcp.")
        self.ledger.append(
            run=self.run,
            kind="ect",
            jti=ect.jti,
            token=ect.token,
            meta={
                "method": "tools/call",
                "tool": tool,
                "id": 1,
                "action": action,
                "principal": self.mandate.principal,
            },
        )
        if respond:
            self.ledger.append(
                run=self.run, kind="response", jti=ect.jti, meta={"status": 200, "duration_ms": 2.0}
            )
        self.last = [ect.jti]
        return ect

    def record(self, mandate: Mandate | None = None) -> ExecutionRecord:
        record = ExecutionRecord.issue(
            self.actors.agent,
            mandate or self.mandate,
            exec_act=None,
            pred=self.last,
            out_hash=sha256_b64url(b"done"),
            status="completed",
        )
        self.ledger.append(run=self.run, kind="record", jti=self.run, token=record.token)
        return record

    def seal(self, signer: Identity | None = None) -> None:
        self.ledger.seal(self.run, signer or self.actors.agent)


def build(tmp_path: Path, actors: Actors, steps: object, **kw: object) -> Path:
    path = tmp_path / "built.jsonl"
    with Ledger(path) as ledger:
        builder = RunBuilder(ledger, actors, **kw)  # type: ignore[arg-type]
        steps(builder)  # type: ignore[operator]
    return path


# --- clean ledgers -----------------------------------------------------------------------------------


def test_a_clean_run_verifies(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    report = verify_ledger(path, actors.trust)
    assert report.ok, report.failures
    assert report.entries == len(run.entries) == 18
    assert report.tokens_verified == 10  # mandate, 3 session + 4 tool ECTs, record, seal
    summary = report.runs[run.run]
    assert (summary.purpose, summary.principal) == ("Answer HR questions", "alice")
    assert (summary.calls, summary.session_calls, summary.denials) == (4, 3, 1)
    assert (summary.status, summary.sealed, summary.verified) == ("completed", True, True)
    assert report.torn_tail is None and report.recoveries == []


def test_many_runs_interleaved_in_one_file(tmp_path: Path, actors: Actors) -> None:
    path = tmp_path / "many.jsonl"
    with Ledger(path) as ledger:
        a, b = RunBuilder(ledger, actors), RunBuilder(ledger, actors)
        for _ in range(3):
            a.ect()
            b.ect("mcp.fetch")
        a.record()
        a.seal()
        b.record()
        b.seal()
        for index in range(3):
            write_run(ledger, actors, principal=f"user{index}")
    report = verify_ledger(path, actors.trust)
    assert report.ok, report.failures
    assert len(report.runs) == 5
    assert all(summary.verified and summary.sealed for summary in report.runs.values())
    assert sorted(s.principal or "" for s in report.runs.values()) == [
        "alice",
        "alice",
        "user0",
        "user1",
        "user2",
    ]


def test_eddsa_keys_verify(tmp_path: Path) -> None:
    eddsa = Actors.generate("EdDSA")
    path, _ = one_run(tmp_path, eddsa)
    assert verify_ledger(path, eddsa.trust).ok


def test_inputs_and_json_report(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    ledger = Ledger(path)
    try:
        assert verify_ledger(ledger, actors.jwks()).ok  # a Ledger and a JWKS dict
    finally:
        ledger.close()
    report = verify_ledger(str(path), actors.trust)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["ok"] is True and document["entries"] == 18 and document["failures"] == []
    assert document["runs"][0]["run"] == run.run and document["runs"][0]["verified"] is True


def test_unsealed_runs(tmp_path: Path, actors: Actors) -> None:
    # An unsealed run at the end of the file is the uncovered tail: exit 3, not also run_unsealed.
    path, run = one_run(tmp_path, actors, seal=False)
    report = verify_ledger(path, actors.trust)
    assert checks(report) == {"unsealed_tail"} and report.exit_code == 3
    assert report.tail is not None and report.tail.runs == {run.run} and report.tail.after_seq == 0
    assert checks(verify_ledger(path, actors.trust, allow_unsealed=True)) == {"unsealed_tail"}
    accepted = verify_ledger(path, actors.trust, allow_unsealed_tail=True)
    assert accepted.ok and accepted.exit_code == 0 and accepted.tail is not None
    # Followed by a sealed run, the unsealed run is covered by that seal's chain, but still has no
    # seal of its own: run_unsealed (exit 1) unless allow_unsealed.
    with Ledger(path) as ledger:
        write_run(ledger, actors)
    report = verify_ledger(path, actors.trust)
    assert checks(report) == {"run_unsealed"} and report.exit_code == 1
    assert report.failures[0].run == run.run and report.tail is None
    assert verify_ledger(path, actors.trust, allow_unsealed=True).ok


# --- the tamper suite (issue acceptance 1) -------------------------------------------------------------


@pytest.mark.parametrize("part", [1, 2])  # payload, signature
def test_one_byte_changed_in_a_token(tmp_path: Path, actors: Actors, part: int) -> None:
    path, run = one_run(tmp_path, actors)
    lines = lines_of(path)
    index = index_of(lines, lambda e: e.kind == "ect" and e.meta.get("tool") == "search")
    entry = parse_line(lines[index])
    assert entry.token is not None
    pieces = entry.token.split(".")
    middle = len(pieces[part]) // 2
    pieces[part] = (
        pieces[part][:middle] + ("A" if pieces[part][middle] != "A" else "B") + pieces[part][middle + 1 :]
    )
    lines[index] = encode_line(dataclasses.replace(entry, token=".".join(pieces)))
    write_lines(path, lines)
    report = verify_ledger(path, actors.trust)
    assert "token_invalid" in checks(report)
    assert any(
        f.check == "token_invalid" and f.seq == entry.seq and f.jti == entry.jti for f in report.failures
    )
    assert report.runs[run.run].verified is False


def test_a_middle_line_deleted(tmp_path: Path, actors: Actors) -> None:
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    removed = parse_line(lines[6])
    write_lines(path, lines[:6] + lines[7:])
    report = verify_ledger(path, actors.trust)
    assert {"seq_gap", "chain_broken"} <= checks(report)
    gap = next(f for f in report.failures if f.check == "seq_gap")
    assert gap.seq == removed.seq + 1 and str(removed.seq) in gap.reason


def test_two_lines_swapped(tmp_path: Path, actors: Actors) -> None:
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    lines[7], lines[8] = lines[8], lines[7]  # two of the parallel tool calls
    write_lines(path, lines)
    assert {"seq_gap", "chain_broken"} <= checks(verify_ledger(path, actors.trust))


def test_a_line_duplicated(tmp_path: Path, actors: Actors) -> None:
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    index = index_of(lines, lambda e: e.kind == "ect")
    write_lines(path, [*lines[: index + 1], lines[index], *lines[index + 1 :]])
    report = verify_ledger(path, actors.trust)
    assert "duplicate_jti" in checks(report)
    # Even with the chain recomputed, the copy is caught by its id.
    write_lines(path, rechain([*lines[: index + 1], lines[index], *lines[index + 1 :]]))
    assert "duplicate_jti" in checks(verify_ledger(path, actors.trust))


def test_lines_removed_after_the_seal_and_the_chain_recomputed(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    lines = lines_of(path)
    keep = [line for line in lines if parse_line(line).kind not in ("denial",)]
    keep.pop(4)  # and a response
    write_lines(path, rechain(keep))
    report = verify_ledger(path, actors.trust)
    # seq and chain are consistent again: only the seal can tell.
    assert checks(report) == {"seal_mismatch"}
    reasons = " ".join(f.reason for f in report.failures)
    assert f"covers {len(run.entries) - 1} entries, the file has {len(keep) - 1}" in reasons
    assert "last line hash" in reasons


def test_the_seal_removed(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    lines = lines_of(path)
    assert parse_line(lines[-1]).kind == "seal"
    write_lines(path, lines[:-1])
    report = verify_ledger(path, actors.trust)
    # Indistinguishable from a writer that died before sealing (an anchor tells them apart).
    assert checks(report) == {"unsealed_tail"} and report.exit_code == 3
    assert report.runs[run.run].sealed is False


def test_a_pred_changed_to_an_unknown_jti(tmp_path: Path, actors: Actors) -> None:
    ghost = str(uuid.uuid4())

    def steps(b: RunBuilder) -> None:
        b.ect()
        b.ect("mcp.fetch", pred=[ghost])
        b.record()
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps), actors.trust)
    assert checks(report) == {"pred_unknown"}
    assert ghost in report.failures[0].reason


def test_a_cycle(tmp_path: Path, actors: Actors) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    def steps(b: RunBuilder) -> None:
        b.ect(jti=first, pred=[second])
        b.ect(jti=second, pred=[first])
        b.record()
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps), actors.trust)
    assert checks(report) == {"dag_cycle"}
    assert {f.jti for f in report.failures} == {first, second}


def test_an_ect_action_outside_the_cap(tmp_path: Path, actors: Actors) -> None:
    def steps(b: RunBuilder) -> None:
        b.ect("mcp.rpc.tools.list", pred=[b.run])  # session actions need no cap
        b.ect("mcp.delete_all")
        b.record()
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps), actors.trust)
    assert checks(report) == {"cap_violation"}
    assert "mcp.delete_all" in report.failures[0].reason


def test_a_token_signed_by_a_key_not_in_the_jwks(tmp_path: Path, actors: Actors) -> None:
    rogue = Identity.generate("ES256", name=actors.agent.name)

    def steps(b: RunBuilder) -> None:
        b.ect()
        b.ect(signer=rogue)
        b.record()
        b.seal()

    path = build(tmp_path, actors, steps)
    report = verify_ledger(path, actors.trust)
    assert "unknown_key" in checks(report)
    rogue_seq = next(
        e.seq for e in Ledger.open(path).entries(kind="ect") if e.token and rogue.kid in _kid(e.token)
    )
    assert [f.seq for f in report.failures if f.check == "unknown_key"] == [rogue_seq]


def _kid(token: str) -> str:
    from mcpclient_auth import jose

    return str(jose.decode(token).header["kid"])


def test_a_record_whose_jti_differs_from_the_mandate(tmp_path: Path, actors: Actors) -> None:
    other = Mandate.issue(
        actors.user,
        agent=actors.agent,
        audience=AUDIENCE,
        purpose="Something else",
        capabilities=["mcp.search"],
    )

    def steps(b: RunBuilder) -> None:
        b.ect()
        b.record(mandate=other)
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps), actors.trust)
    assert checks(report) == {"record_jti_mismatch"}


def test_a_torn_last_line_is_reported_as_torn(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the seal's write did not finish
    report = verify_ledger(path, actors.trust)
    assert report.torn_tail is not None and report.torn_tail.number == len(run.entries)
    assert "torn_tail" in checks(report)
    assert not checks(report) & {"chain_broken", "seq_gap", "line_malformed"}
    # Every complete line is fine: the torn line and the open run are the uncovered tail (exit 3),
    # which --allow-unsealed-tail accepts.
    assert checks(report) == {"torn_tail", "unsealed_tail"} and report.exit_code == 3
    accepted = verify_ledger(path, actors.trust, allow_unsealed_tail=True)
    assert accepted.ok and accepted.torn_tail is not None and accepted.tail is not None
    assert accepted.tail.torn and accepted.tail.runs == {run.run}


# --- the other checks --------------------------------------------------------------------------------


def test_a_seal_by_another_key_or_with_a_bad_signature(tmp_path: Path, actors: Actors) -> None:
    def by_user(b: RunBuilder) -> None:
        b.ect()
        b.record()
        b.seal(signer=b.actors.user)

    # The user's key is an issuer key: it is no agent (signer_not_agent) and not the bound one.
    by_user_report = verify_ledger(build(tmp_path, actors, by_user), actors.trust)
    assert checks(by_user_report) == {"seal_invalid", "signer_not_agent"}
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    seal = parse_line(lines[-1])
    assert seal.token is not None
    header, payload, signature = seal.token.split(".")
    forged = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    lines[-1] = encode_line(dataclasses.replace(seal, token=f"{header}.{payload}.{forged}"))
    write_lines(path, lines)
    assert checks(verify_ledger(path, actors.trust)) == {"seal_invalid"}


def test_entries_after_the_seal(tmp_path: Path, actors: Actors) -> None:
    path, run = one_run(tmp_path, actors)
    with Ledger(path) as ledger:
        ledger.append(run=run.run, kind="denial", meta={"code": "mandate_denied"})
    assert checks(verify_ledger(path, actors.trust)) == {"entry_after_seal", "unsealed_tail"}


def test_a_run_without_its_mandate(tmp_path: Path, actors: Actors) -> None:
    def steps(b: RunBuilder) -> None:
        b.ect()
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps, mandate=False), actors.trust)
    assert checks(report) == {"mandate_missing", "pred_unknown"}  # its pred was the absent mandate


def test_a_predecessor_newer_than_its_child(tmp_path: Path, actors: Actors) -> None:
    def steps(b: RunBuilder) -> None:
        b.ect()
        b.ect("mcp.fetch", now=time.time() - 300)  # claims to be older than its parent
        b.record()
        b.seal()

    assert checks(verify_ledger(build(tmp_path, actors, steps), actors.trust)) == {"pred_newer"}


def test_a_token_logged_after_it_expired(tmp_path: Path, actors: Actors) -> None:
    def steps(b: RunBuilder) -> None:
        b.ect(now=time.time() - 3600, pred=[])  # long expired when it was logged
        b.record()
        b.seal()

    assert checks(verify_ledger(build(tmp_path, actors, steps), actors.trust)) == {"token_time"}


def test_an_ect_by_someone_else_than_the_agent(tmp_path: Path, actors: Actors) -> None:
    mallory = Identity.generate("ES256", name="mallory")
    twin = Identity.generate("ES256", name=actors.agent.name)  # right name, wrong key
    trust = trust_for(issuers=[(actors.user, ["alice"])], agents=[actors.agent, mallory, twin])

    def steps(b: RunBuilder) -> None:
        b.ect(signer=mallory)
        b.ect(signer=twin)
        b.record()
        b.seal()

    report = verify_ledger(build(tmp_path, actors, steps), trust)
    assert checks(report) == {"ect_issuer_mismatch"}
    reasons = [f.reason for f in report.failures]
    assert any("iss" in r for r in reasons) and any("binds" in r for r in reasons)


def test_a_record_that_does_not_repeat_its_mandate(tmp_path: Path, actors: Actors) -> None:
    def steps(b: RunBuilder) -> None:
        b.ect()
        twin = Mandate.issue(
            actors.user,
            agent=actors.agent,
            audience=AUDIENCE,
            purpose="Another purpose",
            capabilities=["mcp.search", "mcp.fetch"],
            jti=b.run,
        )
        b.record(mandate=twin)
        b.seal()

    assert checks(verify_ledger(build(tmp_path, actors, steps), actors.trust)) == {"record_invalid"}


def test_a_duplicate_ect_id_and_a_response_to_nothing(tmp_path: Path, actors: Actors) -> None:
    same = str(uuid.uuid4())

    def steps(b: RunBuilder) -> None:
        b.ect(jti=same, pred=[b.run])
        b.ect(jti=same, pred=[b.run])
        b.ledger.append(run=b.run, kind="response", jti=str(uuid.uuid4()), meta={"status": 200})
        b.record()
        b.seal()

    assert checks(verify_ledger(build(tmp_path, actors, steps), actors.trust)) == {
        "duplicate_jti",
        "entry_mismatch",
    }


def test_a_malformed_middle_line(tmp_path: Path, actors: Actors) -> None:
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    write_lines(path, [*lines[:5], b'{"not": "an entry"}', *lines[5:]])
    report = verify_ledger(path, actors.trust)
    assert {"line_malformed", "chain_broken"} <= checks(report)
    assert next(f for f in report.failures if f.check == "line_malformed").line == 6


def test_every_failure_uses_a_registered_check(tmp_path: Path, actors: Actors) -> None:
    path, _ = one_run(tmp_path, actors)
    lines = lines_of(path)
    write_lines(path, [lines[0], b"junk", *lines[3:]], tail=b'{"v":1')
    report = verify_ledger(path, actors.trust)
    assert checks(report) and checks(report) <= set(CHECKS)


def test_jobs_2_finds_exactly_what_jobs_1_finds(tmp_path: Path, actors: Actors) -> None:
    rogue = Identity.generate("ES256", name=actors.agent.name)
    path = tmp_path / "mixed.jsonl"
    with Ledger(path) as ledger:
        for _ in range(4):
            write_run(ledger, actors)
        b = RunBuilder(ledger, actors)
        b.ect(signer=rogue)
        b.ect("mcp.delete_all")
        b.record()
        b.seal()
        write_run(ledger, actors, seal=False)
    lines = lines_of(path)
    index = index_of(lines, lambda e: e.kind == "mandate")
    entry = parse_line(lines[index])
    assert entry.token is not None
    lines[index] = encode_line(dataclasses.replace(entry, token=entry.token[:-3] + "AAA"))
    write_lines(path, lines)

    def key(report: Report) -> list[tuple[int | None, str, str | None]]:
        return sorted(((f.seq, f.check, f.jti) for f in report.failures), key=repr)

    serial = verify_ledger(path, actors.trust, jobs=1)
    parallel = verify_ledger(path, actors.trust, jobs=2)
    assert key(serial) == key(parallel)
    assert {"token_invalid", "unknown_key", "cap_violation", "unsealed_tail", "chain_broken"} <= checks(serial)
    assert serial.tokens_verified == parallel.tokens_verified


def test_jobs_workers_fork_only_from_a_one_thread_process_and_both_ways_agree_with_jobs_1(
    tmp_path: Path, actors: Actors
) -> None:
    """Issue #16: ``--jobs`` workers are forked (no package import per worker) only on Linux from a
    process with exactly one thread; with another thread alive they are spawned, as before. Either
    way the report is jobs=1's, field for field, across several worker batches."""
    from mcpclient_auth.ledger import verify as verify_module

    path = tmp_path / "many.jsonl"
    with Ledger(path) as ledger:
        for _ in range(30):  # > _BATCH_ENTRIES entries: several batches per pass
            write_run(ledger, actors)
        RunBuilder(ledger, actors).ect("mcp.delete_all")
    serial = verify_ledger(path, actors.trust, jobs=1).to_dict()
    assert serial["entries"] > verify_module._BATCH_ENTRIES and "cap_violation" in serial["checks"]

    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        assert verify_module._pool_context().get_start_method() == "spawn"
        spawned = verify_ledger(path, actors.trust, jobs=2).to_dict()
    finally:
        release.set()
        other.join()
    assert spawned == serial
    if sys.platform.startswith("linux") and len(os.listdir("/proc/self/task")) == 1:
        assert verify_module._pool_context().get_start_method() == "fork"
    assert verify_ledger(path, actors.trust, jobs=2).to_dict() == serial


# --- hostile input --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.binary(max_size=60) | st.sampled_from([b'{"v":1}', b"", b"\xff\xfe"]), max_size=6),
    st.binary(max_size=20),
)
def test_garbage_files_never_crash_the_verifier(
    tmp_path: Path, actors: Actors, lines: list[bytes], tail: bytes
) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\n".join(lines) + tail)
    report = verify_ledger(path, actors.trust)
    assert isinstance(report.ok, bool)
    assert checks(report) <= set(CHECKS)


# --- calls whose answer never arrived (issue 15) ------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        None,  # nothing after the ECT: the run closed without writing its outcome
        {"kind": "error", "meta": {"code": "incomplete", "message": "no complete response"}},
        {"kind": "error", "meta": {"code": "transport_error", "message": "ReadError"}},
        {"kind": "response", "meta": {"status": 200, "out_hash": "h", "code": "response_missing"}},
        # the first response on the call's stream had another id: the client never got this answer
        {"kind": "response", "meta": {"status": 200, "out_hash": "h", "code": "answer_id_mismatch"}},
        {"kind": "response", "meta": {"status": 200, "out_hash": "h", "code": "answer_id_mismatch", "resumed": True}},
    ],
)
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_tool_call_without_an_answer_is_flagged(
    tmp_path: Path, actors: Actors, outcome: dict[str, object] | None, jobs: int
) -> None:
    def steps(run: RunBuilder) -> None:
        run.ect("mcp.search")
        lost = run.ect("mcp.fetch", respond=False)
        if outcome is not None:
            run.ledger.append(run=run.run, jti=lost.jti, **outcome)  # type: ignore[arg-type]
        run.record()
        run.seal()

    path = build(tmp_path, actors, steps)
    report = verify_ledger(path, actors.trust, jobs=jobs)
    lost_jti = [e.jti for e in Ledger.open(path).entries(kind="ect")][1]
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", lost_jti)]
    assert report.exit_code == 1 and "response_missing" in CHECKS


@pytest.mark.parametrize(
    "meta",
    [
        {"status": 200, "out_hash": "h", "bytes": 9},
        {"status": 200, "out_hash": "h", "bytes": 9, "resumed": True},  # answered on a resumed GET
        {"status": 200, "out_hash": "h", "code": "event_too_large"},  # arrived, too large to inspect
        {"status": 403, "out_hash": "h"},  # the server answered, with a refusal
    ],
)
def test_an_answered_tool_call_is_not_flagged(
    tmp_path: Path, actors: Actors, meta: dict[str, object]
) -> None:
    def steps(run: RunBuilder) -> None:
        ect = run.ect("mcp.search", respond=False)
        run.ledger.append(run=run.run, kind="response", jti=ect.jti, meta=meta)
        run.record()
        run.seal()

    assert verify_ledger(build(tmp_path, actors, steps), actors.trust).ok


def test_an_open_run_and_session_calls_are_not_judged_for_answers(tmp_path: Path, actors: Actors) -> None:
    def steps(run: RunBuilder) -> None:
        run.ect("mcp.search", respond=False)  # still in flight: the run has no seal yet

    report = verify_ledger(
        build(tmp_path, actors, steps), actors.trust, allow_unsealed=True, allow_unsealed_tail=True
    )
    assert report.ok, report.failures
    path = tmp_path / "session.jsonl"
    with Ledger(path) as ledger:
        write_run(ledger, actors)  # its session calls (initialize, tools/list) have responses or none
    assert verify_ledger(path, actors.trust).ok


def test_the_verifier_summarises_runs_as_the_reader_does(tmp_path: Path, actors: Actors) -> None:
    # The verifier summarises a mandate or record from the claims it already parsed (no second
    # decode); the summary must stay the reader's, field for field, also when a signature is bad.
    path, run = one_run(tmp_path, actors)
    forged = tmp_path / "forged.jsonl"
    lines = path.read_bytes().splitlines()
    mandate = json.loads(lines[0])
    head, payload, _ = mandate["token"].split(".")
    mandate["token"] = f"{head}.{payload}.{'A' * 86}"  # a wrong signature, same claims
    lines[0] = json.dumps(mandate, separators=(",", ":"), ensure_ascii=False).encode()
    forged.write_bytes(b"\n".join(lines) + b"\n")
    for ledger, ok in ((path, True), (forged, False)):
        report = verify_ledger(ledger, actors.trust, allow_unsealed_tail=True)
        assert report.ok is ok
        read = {summary.run: summary for summary in Ledger.open(ledger).runs()}[run.run]
        verified = report.runs[run.run]
        verified.verified = read.verified
        assert verified == read
        assert (verified.purpose, verified.status) == ("Answer HR questions", "completed")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10_000),
            st.sampled_from(["flip_signature", "swap_token", "other_header", "foreign_key", "truncate", "same"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_signatures_checked_ahead_change_no_verdict(
    tmp_path: Path, actors: Actors, edits: list[tuple[int, str]]
) -> None:
    """Issue #16: the verifier checks a batch of signatures back to back before the entries
    (``_preverify``); the strict path then runs unchanged. On valid and tampered ledgers (forged,
    swapped, foreign-key, re-headed, truncated tokens) the report is the one the strict path alone
    gives, field for field."""
    from mcpclient_auth.keys import Preverified
    from mcpclient_auth.ledger import verify as verify_module

    path = tmp_path / "ahead.jsonl"
    path.unlink(missing_ok=True)
    stranger = Identity.generate("ES256", name=actors.agent.name)
    with Ledger(path) as ledger:
        for _ in range(3):
            write_run(ledger, actors)
    lines = lines_of(path)
    tokened = [i for i, line in enumerate(lines) if parse_line(line).token]
    tokens = [parse_line(lines[i]).token for i in tokened]
    for where, edit in edits:
        index = tokened[where % len(tokened)]
        entry = parse_line(lines[index])
        token = entry.token
        assert token is not None
        head, payload, signature = [*token.split("."), "", ""][:3]  # an earlier edit may have cut it
        if edit == "flip_signature" and signature:
            token = f"{head}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
        elif edit == "swap_token":
            token = tokens[(where + 1) % len(tokens)] or token
        elif edit == "other_header":
            other = (tokens[(where + 3) % len(tokens)] or token).split(".")[0]
            token = f"{other}.{payload}.{signature}"
        elif edit == "foreign_key":
            forged = stranger.sign(f"{head}.{payload}".encode())
            token = f"{head}.{payload}.{_b64(forged)}"
        elif edit == "truncate":
            token = token[: len(token) // 2]
        lines[index] = encode_line(dataclasses.replace(entry, token=token))
    write_lines(path, lines)
    found: list[int] = []
    real = verify_module._preverify

    def counted(trust: object, batch_tokens: list[str | None]) -> Preverified:
        batch = real(trust, batch_tokens)  # type: ignore[arg-type]
        found.append(len(batch))
        return batch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "_preverify", counted)
        ahead = verify_ledger(path, actors.trust).to_dict()
    assert sum(found) >= len(tokens) - len(edits)  # the untouched tokens were checked ahead
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "_preverify", lambda trust, batch_tokens: Preverified())
        strict = verify_ledger(path, actors.trust).to_dict()
    assert ahead == strict


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
