"""The per-context state of the request path (``mcpclient_auth._context``), without a network."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import mcpclient_auth
from mcpclient_auth import _context as context
from mcpclient_auth.authz import StaticTokens
from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun

URL = "http://127.0.0.1:9/mcp"  # never contacted


def make(tmp_path: Path, **kw: object) -> AgentRun:
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("EdDSA", name="agent-1")
    return AgentRun(
        agent=agent,
        issuer=user,
        purpose="p",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp_path / "l.jsonl",
        **kw,  # type: ignore[arg-type]
    )


def test_the_public_names_are_the_context_modules_own() -> None:
    # One home for the state: the package root, hooks and run re-export the same objects.
    from mcpclient_auth import _hooks as hooks
    from mcpclient_auth import run

    assert mcpclient_auth.use_run is context.use_run is hooks.use_run
    assert mcpclient_auth.current_run is context.current_run is hooks.current_run
    assert mcpclient_auth.acting_for is context.acting_for is run.acting_for
    assert run.current_principal is context.current_principal


def test_run_selection_nests_and_restores(tmp_path: Path) -> None:
    first, second = make(tmp_path / "a"), make(tmp_path / "b")
    assert context.current_run() is None
    manager = context.use_run(first)
    assert isinstance(manager, AbstractContextManager)
    with manager as selected:
        assert selected is first and context.current_run() is first
        with second.activate() as inner:
            assert inner is second and context.current_run() is second
        assert context.current_run() is first
    assert context.current_run() is None


def test_acting_for_takes_a_principal_or_a_non_empty_id() -> None:
    with context.acting_for(Principal(id="alice")) as who:
        assert who == "alice" == context.current_principal()
        with context.acting_for("bob"):
            assert context.current_principal() == "bob"
        assert context.current_principal() == "alice"
    assert context.current_principal() is None
    with pytest.raises(ConfigurationError), context.acting_for(""):
        pass


def test_discovery_mode_marks_the_run_and_selects_it(tmp_path: Path) -> None:
    run = make(tmp_path, discovery_token_source=StaticTokens({"alice": "svc-token"}))
    assert context.discovery_run() is None
    with run.discovery() as selected:
        assert selected is run and context.discovery_run() is run and context.current_run() is run
    assert context.discovery_run() is None and context.current_run() is None
    plain = make(tmp_path / "plain")
    with pytest.raises(ConfigurationError):
        plain.discovery()


def test_context_state_does_not_leak_between_tasks(tmp_path: Path) -> None:
    run = make(tmp_path)
    seen: list[object] = []

    async def other() -> None:
        seen.append(context.current_run())

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(other())  # created outside: empty context
        with context.use_run(run):
            await task
            seen.append(context.current_run())

    asyncio.run(main())
    assert seen == [None, run]
