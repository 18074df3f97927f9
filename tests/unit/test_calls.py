"""The per-call pipeline (``mcpclient_auth._calls``) on bare ``httpx.Request`` objects, no network."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import calls_pipeline as pipeline


async def test_an_admitted_call_is_signed_chained_and_journalled(tmp_path: Path) -> None:
    await pipeline.check_admitted_call_is_signed_chained_and_journalled(httpx, tmp_path)


async def test_refusals_are_journalled_and_nothing_is_signed(tmp_path: Path) -> None:
    await pipeline.check_refusals_are_journalled_and_nothing_is_signed(httpx, tmp_path)


async def test_a_dpop_proof_is_signed_and_a_tampered_one_fails(tmp_path: Path) -> None:
    await pipeline.check_dpop_proof_is_signed_and_a_tampered_proof_fails(httpx, tmp_path)


async def test_the_users_token_is_sent_signed_async_and_sync(tmp_path: Path) -> None:
    await pipeline.check_the_users_token_is_sent_signed_async_and_sync(httpx, tmp_path)


async def test_a_first_challenge_run_sends_no_token_but_signs(tmp_path: Path) -> None:
    await pipeline.check_a_first_challenge_run_sends_no_token_but_signs(httpx, tmp_path)


async def test_a_body_less_request_is_signed_without_an_ect(tmp_path: Path) -> None:
    await pipeline.check_a_body_less_request_is_signed_without_an_ect(httpx, tmp_path)
