"""Acceptance 6 (issue 9): no subject token, client secret, access token or private key anywhere.

One full end-to-end run — ``AgentRun`` + ``TokenExchange`` against the local IdP + the real FastMCP
server behind the verifying guard, two tool calls, a denied one, close, verify — with sentinel
values for the user's subject token, the client secret and both private keys (the JWK ``d`` and the
PEM body). Then a series of induced failures (IdP down, IdP rejecting the client, a bad private key,
an Authorization header smuggled into ``headers=``, a forged mandate). Everything observable is
scanned for the sentinels and for the access tokens the IdP issued:

- every log record of every logger at DEBUG (``caplog``);
- ``str`` and ``repr`` of every exception raised (with causes and contexts);
- ``repr`` and ``str`` of every public object touched;
- the ledger file, and the output of ``mcpclient-auth ledger verify/show/runs/graph`` and
  ``token decode``;
- every header the MCP server received (it must see the exchanged token, never the subject token).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from mcpclient_auth.act import Mandate
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import TokenExchange
from mcpclient_auth.cli import app
from mcpclient_auth.errors import (
    ConfigurationError,
    KeyFormatError,
    MandateDenied,
    McpClientAuthError,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)
from mcpclient_auth.httpsig import RequestSigner, RequestVerifier
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.principal import Principal
from tests.support.hooks_env import Env, hr_server
from tests.support.idp import IdP, Reply
from tests.support.servers import free_port, serve
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

SUBJECT_TOKEN = "st-SENTINEL-0c9e1d7a5b"
CLIENT_SECRET = "cs-SENTINEL-3f81a2c6d4"
BOUND = 30.0


def private_material(identity: Identity) -> list[str]:
    """The private JWK ``d`` and the lines of the PKCS#8 PEM body: none may ever leave the key object."""
    d = identity.private_jwk()["d"]
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    raw_d = base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))
    return [d, *body, base64.b64encode(raw_d).decode(), raw_d.hex()]


def exception_texts(exc: BaseException) -> list[str]:
    texts: list[str] = []
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    for _ in range(100):
        if not todo:
            break
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item)]
        if isinstance(item, McpClientAuthError):
            texts.append(json.dumps(item.to_dict(), default=str))
        todo += [item.__cause__, item.__context__, *getattr(item, "exceptions", ())]
    return texts


@pytest.fixture(scope="module")
def idp() -> Iterator[IdP]:
    provider = IdP(clients={"agent": CLIENT_SECRET}, subjects={SUBJECT_TOKEN: "alice"})
    with serve(provider.app) as base:
        provider.base_url = base
        yield provider


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with hr_server() as server:
        yield server


async def test_no_secret_leaves_the_sdk(
    env: Env, idp: IdP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, DEBUG
    observed: list[str] = []
    path = tmp_path / "ledger.jsonl"
    source = TokenExchange(
        idp.token_url, client_id="agent", client_secret=CLIENT_SECRET, audience=env.url, scopes=["mcp.read"]
    )
    principal = Principal(id="alice", subject_token=SUBJECT_TOKEN)

    # --- the full run ---------------------------------------------------------------------------------
    run = env.run(
        path,
        principal=principal,
        token_source=source,
        capabilities=["mcp.search", "mcp.get_office_locations"],
    )
    async with run:
        async with open_session(run) as session:
            observed.append(repr(session))
            first = await asyncio.wait_for(session.call_tool("search", {"query": "holidays"}), BOUND)
            second = await asyncio.wait_for(session.call_tool("get_office_locations", {}), BOUND)
            assert not first.isError and not second.isError
            with pytest.raises(MandateDenied) as denied:
                await asyncio.wait_for(session.call_tool("get_employee_salary", {"employee": "bob"}), BOUND)
            observed += exception_texts(denied.value)
        token = await source.get_token(principal, audience=None)
        observed += [
            repr(run),
            str(run),
            repr(run.mandate),
            repr(run.principal),
            str(run.principal),
            repr(source),
            repr(token),
            str(token),
            repr(run.signer),
            repr(run.ledger),
            repr(run.agent),
            repr(env.user),
            repr(env.trust),
            repr(run.frontier),
            repr(run.endpoint_set),
        ]
    observed += [repr(run.record), repr(RequestVerifier(env.trust))]
    assert env.state.rejected == 0, env.state.errors()

    # The server saw the exchanged token — issued by the IdP for alice — and never the subject token.
    issued = {s.authorization.removeprefix("Bearer ") for s in env.state.requests if s.authorization}
    assert issued and all(IdP.decode(t)["sub"] == "alice" for t in issued)
    assert any(r.form.get("subject_token") == [SUBJECT_TOKEN] for r in idp.requests)  # the control
    for seen in env.state.requests:
        observed.append(json.dumps({"auth": "(checked above)", "ours": seen.carried_our_headers}))
        assert SUBJECT_TOKEN not in (seen.authorization or "") and CLIENT_SECRET not in (
            seen.authorization or ""
        )

    # --- induced failures -----------------------------------------------------------------------------
    failures: list[BaseException] = []
    # Another subject token for the same principal (a run acts only for its mandate's principal).
    bob = Principal(id="alice", subject_token=SUBJECT_TOKEN + "-bob")
    down = TokenExchange(
        f"http://127.0.0.1:{free_port()}/token",
        client_id="agent",
        client_secret=CLIENT_SECRET,
        audience=env.url,
        timeout=0.5,
        retry_backoff=0.01,
    )
    wrong_client = TokenExchange(
        idp.token_url, client_id="agent", client_secret=CLIENT_SECRET + "-wrong", audience=env.url
    )
    flaky = TokenExchange(
        idp.token_url, client_id="agent", client_secret=CLIENT_SECRET, audience=env.url, retry_backoff=0.01
    )
    for failing, expected in (
        (down, TokenExchangeUnavailable),
        (wrong_client, TokenExchangeRejected),
        (flaky, TokenExchangeUnavailable),
    ):
        if failing is flaky:
            idp.queue(Reply.unavailable(503), Reply.unavailable(503))
        failing_run = env.run(tmp_path / "failures.jsonl", principal=bob, token_source=failing)
        async with (
            failing_run,
            httpx.AsyncClient(headers={"accept": "application/json, text/event-stream"}) as client,
        ):
            failing_run.install(client)
            with pytest.raises(expected) as caught:
                await asyncio.wait_for(
                    client.post(
                        env.url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
                    ),
                    BOUND,
                )
            failures.append(caught.value)
        observed += [repr(failing), repr(failing_run)]
    with pytest.raises(ConfigurationError) as smuggled:
        run.httpx_client_factory()(headers={"Authorization": f"Bearer {SUBJECT_TOKEN}"})
    failures.append(smuggled.value)
    broken = dict(env.agent.private_jwk(), x=env.user.public_jwk()["x"])  # d no longer matches x
    with pytest.raises(KeyFormatError) as bad_key:
        Identity.from_jwk(broken)
    failures.append(bad_key.value)
    pem = env.agent.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError) as bad_pem:
        Identity.from_pem(pem[:-40] + b"AAAA" + pem[-36:])
    failures.append(bad_pem.value)
    with pytest.raises(McpClientAuthError) as forged:
        Mandate.verify(run.mandate.token, trust_for(issuers=[Identity.generate("ES256")]))
    failures.append(forged.value)
    for failure in failures:
        observed += exception_texts(failure)
    # A signer and its request carry no private material either.
    request = httpx.Request("POST", env.url, content=b"{}", headers={"content-type": "application/json"})
    observed += [repr(RequestSigner(env.agent).sign(request)), repr(dict(request.headers))]

    # --- the ledger, the verifier and the CLI ---------------------------------------------------------
    report = verify_ledger(path, env.trust)
    assert report.ok, report.failures[:3]
    observed += [
        path.read_text(),
        repr(report),
        json.dumps(report.to_dict()),
        (tmp_path / "failures.jsonl").read_text(),
    ]
    observed += [repr(entry) for entry in Ledger.open(path).entries()]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(env.trust.to_jwks()))
    runner = CliRunner()
    for args in (
        ["ledger", "verify", str(path), "--jwks", str(jwks), "--json"],
        ["ledger", "verify", str(path), "--jwks", str(jwks)],
        ["ledger", "show", str(path)],
        ["ledger", "runs", str(path), "--jwks", str(jwks)],
        ["ledger", "graph", str(path), "--format", "html"],
        ["token", "decode", run.mandate.token],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        observed.append(result.output)
    observed.append(caplog.text)
    observed += [record.getMessage() + repr(record.args) for record in caplog.records]
    assert any("mcp" in r.name or "httpx" in r.name for r in caplog.records)  # logs were really captured

    secrets = {
        "subject token": SUBJECT_TOKEN,
        "client secret": CLIENT_SECRET,
        **{f"agent key {n}": s for n, s in enumerate(private_material(env.agent))},
        **{f"user key {n}": s for n, s in enumerate(private_material(env.user))},
        **{f"access token {n}": t for n, t in enumerate(sorted(issued))},
    }
    leaks = [
        (name, n) for n, text in enumerate(observed) for name, secret in secrets.items() if secret in text
    ]
    assert leaks == [], f"secrets found in observed texts: {leaks[:5]}"
    print(
        f"\nsecrets: {len(secrets)} sentinels, {len(observed)} texts ({sum(map(len, observed))} chars), "
        f"{len(caplog.records)} log records, {len(failures) + 1} induced failures: no leak"
    )
