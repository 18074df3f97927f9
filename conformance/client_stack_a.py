"""Everything-client for stack A (mcp 1.x on httpx) — the suite's contract is in ``_common.py``.

    python conformance/client_stack_a.py <server-url>            # our SDK: AgentRun + our token sources
    python conformance/client_stack_a.py --plain <server-url>    # plain mcp 1.x, for comparison

Both variants do the same MCP work per scenario (:func:`workload`); they differ only in the HTTP
client: the plain one uses mcp's own OAuth providers, the SDK one an :class:`AgentRun`'s factory with
one of our token sources (:mod:`_sources`) and the signing hooks on every request.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx
from _common import CIMD_URL, REDIRECT_URI, SCENARIO, SignedRun, context, log, plain, server_url
from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client


async def elicitation_defaults(context_: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """Accept, filling in every default the requested schema declares (SEP-1034)."""
    content: dict[str, Any] = {}
    schema = getattr(params, "requestedSchema", None) or {}
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop:
            content[name] = prop["default"]
    return types.ElicitResult(action="accept", content=content)


def stub_args(schema: dict[str, Any]) -> dict[str, Any]:
    by_type = {"string": "x", "integer": 0, "number": 0, "boolean": False, "object": {}, "array": []}
    props = schema.get("properties", {}) or {}
    return {n: by_type.get((props.get(n) or {}).get("type"), "x") for n in schema.get("required", []) or []}


async def workload(session: ClientSession) -> None:
    """What each scenario asks of a client once it is connected (the same for both variants)."""
    await session.initialize()
    listed = await session.list_tools()
    names = [t.name for t in listed.tools]
    log(f"tools: {names}")
    if SCENARIO in ("tools_call", "request-metadata", "http-standard-headers"):
        await session.call_tool("add_numbers", {"a": 5, "b": 3})
    elif SCENARIO == "sse-retry":
        await session.call_tool("test_reconnection", {})
    elif SCENARIO == "elicitation-sep1034-client-defaults":
        await session.call_tool("test_client_elicitation_defaults", {})
    elif SCENARIO == "json-schema-2020-12-preservation":
        focal = next(t for t in listed.tools if t.name == "json_schema_2020_12_tool")
        await session.call_tool("json_schema_echo", {"schema": focal.inputSchema})
    elif SCENARIO == "http-invalid-tool-headers":
        for tool in listed.tools:
            try:
                await session.call_tool(tool.name, stub_args(tool.inputSchema))
            except Exception as exc:  # the scenario allows per-call errors
                log(f"call {tool.name} failed: {type(exc).__name__}")
    elif SCENARIO == "http-custom-headers":
        for call in context().get("toolCalls", []) or []:
            if call.get("name") in names:
                try:
                    await session.call_tool(call["name"], call.get("arguments") or {})
                except Exception as exc:
                    log(f"call {call['name']} failed: {type(exc).__name__}")
    elif SCENARIO == "sep-2322-client-request-state":
        for name in ("test_mrtr_echo_state", "test_mrtr_no_state", "test_mrtr_no_result_type"):
            if name in names:
                await session.call_tool(name, {})
    elif SCENARIO.startswith("auth/") and listed.tools:
        result = await session.call_tool(listed.tools[0].name, {})
        log(f"called {listed.tools[0].name}: isError={result.isError}")


async def connect_and_work(url: str, **transport: Any) -> None:
    async with (
        streamablehttp_client(url, **transport) as (read, write, _),
        ClientSession(read, write, elicitation_callback=elicitation_defaults) as session,
    ):
        await workload(session)


# --- plain mcp 1.x --------------------------------------------------------------------------------------


async def run_plain(url: str) -> None:
    auth = plain_auth(url) if SCENARIO.startswith("auth/") else None
    await connect_and_work(url, auth=auth) if auth is not None else await connect_and_work(url)


def plain_auth(url: str) -> httpx.Auth:
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.client.auth.extensions.client_credentials import (
        ClientCredentialsOAuthProvider,
        PrivateKeyJWTOAuthProvider,
        SignedJWTParameters,
    )
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
    from pydantic import AnyUrl

    class Memory(TokenStorage):
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.info: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.info

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.info = client_info

    ctx = context()
    storage = Memory()
    if SCENARIO == "auth/client-credentials-jwt":
        jwt = SignedJWTParameters(
            issuer=ctx["client_id"],
            subject=ctx["client_id"],
            signing_algorithm=ctx.get("signing_algorithm", "ES256"),
            signing_key=ctx["private_key_pem"],
        )
        return PrivateKeyJWTOAuthProvider(
            server_url=url,
            storage=storage,
            client_id=ctx["client_id"],
            assertion_provider=jwt.create_assertion_provider(),
        )
    if SCENARIO == "auth/client-credentials-basic":
        return ClientCredentialsOAuthProvider(
            server_url=url,
            storage=storage,
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            token_endpoint_auth_method="client_secret_basic",
        )
    if ctx.get("client_id") and ctx.get("client_secret") and SCENARIO == "auth/pre-registration":
        storage.info = OAuthClientInformationFull(
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="client_secret_basic",
        )
    captured: dict[str, str | None] = {}

    async def redirect_handler(authorization_url: str) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get(authorization_url, follow_redirects=False)
        location = httpx.URL(response.headers["location"])
        captured["code"] = location.params.get("code")
        captured["state"] = location.params.get("state")

    async def callback_handler() -> tuple[str, str | None]:
        code = captured.get("code")
        if not code:
            raise RuntimeError("no authorization code in the redirect")
        return code, captured.get("state")

    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="conformance-client",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=CIMD_URL,
    )


# --- our SDK ------------------------------------------------------------------------------------------


async def run_sdk(url: str) -> None:
    from _sources import allowed_scopes_for, initial_scope_for, principal_for, token_source_for

    async with httpx.AsyncClient(follow_redirects=False) as browser:
        source = await token_source_for(SCENARIO, url, browser.get) if SCENARIO.startswith("auth/") else None
        async with SignedRun(
            url,
            token_source=source,
            principal=principal_for(SCENARIO),
            allowed_scopes=allowed_scopes_for(SCENARIO),
            initial_scope=initial_scope_for(SCENARIO),
        ) as signed:
            await connect_and_work(url, httpx_client_factory=signed.httpx_factory())


def main() -> None:
    url = server_url(sys.argv)
    log(f"{'plain mcp' if plain(sys.argv) else 'mcpclient-auth'} against {url}")
    asyncio.run(run_plain(url) if plain(sys.argv) else run_sdk(url))


if __name__ == "__main__":
    main()
