"""Stack A: the one 401 / 403 flow for httpx clients, async (the run's factory) and sync
(``httpx.Client`` + ``run.install``). The test bodies are shared with stack B
(:mod:`tests.support.auth_flow_cases`); before #14's sync flow a sync client of a run with a token
source was refused outright, and before the first-challenge flow the token was always obtained
before the first request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.support import auth_flow_cases as cases
from tests.support.authz_env import AuthzEnv, authz_server

pytestmark = pytest.mark.e2e

Case = Callable[[ModuleType, str, AuthzEnv, Path], Awaitable[None]]
CASES: list[Case] = [
    cases.re_obtains_once_on_401,
    cases.second_401_is_a_typed_refusal,
    cases.steps_up_once_on_403,
    cases.second_403_is_a_typed_refusal,
    cases.first_challenge_chooses_the_scope,
    cases.first_challenge_outside_the_allowlist_is_refused,
    cases.sync_and_async_clients_share_one_token_request,
    cases.dpop_proves_every_send_and_answers_the_nonce_once,
]


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


@pytest.mark.parametrize("kind", cases.KINDS)
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
async def test_auth_flow(case: Case, kind: str, env: AuthzEnv, tmp_path: Path) -> None:
    await case(httpx, kind, env, tmp_path)
