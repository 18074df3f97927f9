"""Everything-client for stack B (mcp 2.x on httpx2, native 2026-07-28 transport); see ``_common.py``.

    python conformance/client_stack_b.py <server-url>            # our SDK: AgentRun + our token sources
    python conformance/client_stack_b.py --plain <server-url>    # plain mcp 2.x, for comparison

Both variants do the same MCP work per scenario (:func:`workload`) through ``mcp.client.Client``; the
plain one gives it an httpx2 client with mcp's own OAuth providers, the SDK one the run's httpx2 client
(:func:`mcpclient_auth.factory.httpx2_client_factory`) with one of our token sources.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx2
import mcp_types as types
from _common import (
    CIMD_URL,
    PROTOCOL_VERSION,
    REDIRECT_URI,
    SCENARIO,
    SignedRun,
    context,
    log,
    plain,
    server_url,
)
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS


def mode() -> str:
    """2026-07-28 legs: ``auto`` (server/discover, then the stateless lifecycle); older: ``legacy``."""
    if SCENARIO == "json-schema-ref-no-deref":
        return "legacy"  # this scenario's mock only speaks the handshake lifecycle
    if PROTOCOL_VERSION is None or PROTOCOL_VERSION in MODERN_PROTOCOL_VERSIONS:
        return "auto"
    return "legacy"


async def elicitation(context_: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """Accept: the schema's defaults (SEP-1034), or ``confirmed`` for the MRTR scenario."""
    if SCENARIO == "sep-2322-client-request-state":
        return types.ElicitResult(action="accept", content={"confirmed": True})
    content: dict[str, Any] = {}
    schema = getattr(params, "requested_schema", None) or {}
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop:
            content[name] = prop["default"]
    return types.ElicitResult(action="accept", content=content)


async def sampling(context_: Any, params: Any) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=""), model="conformance-stub"
    )


async def roots(context_: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[])


def stub_args(schema: dict[str, Any]) -> dict[str, Any]:
    by_type = {"string": "x", "integer": 0, "number": 0, "boolean": False, "object": {}, "array": []}
    props = schema.get("properties", {}) or {}
    return {n: by_type.get((props.get(n) or {}).get("type"), "x") for n in schema.get("required", []) or []}


async def workload(client: Client) -> None:
    listed = await client.list_tools()
    names = [t.name for t in listed.tools]
    log(f"tools: {names}")
    if SCENARIO in ("tools_call", "request-metadata", "http-standard-headers"):
        await client.call_tool("add_numbers", {"a": 5, "b": 3})
    elif SCENARIO == "sse-retry":
        await client.call_tool("test_reconnection", {})
    elif SCENARIO == "elicitation-sep1034-client-defaults":
        await client.call_tool("test_client_elicitation_defaults", {})
    elif SCENARIO == "json-schema-2020-12-preservation":
        focal = next(t for t in listed.tools if t.name == "json_schema_2020_12_tool")
        await client.call_tool("json_schema_echo", {"schema": focal.input_schema})
    elif SCENARIO == "http-invalid-tool-headers":
        for tool in listed.tools:
            try:
                await client.call_tool(tool.name, stub_args(tool.input_schema))
            except Exception as exc:  # the scenario allows per-call errors
                log(f"call {tool.name} failed: {type(exc).__name__}")
    elif SCENARIO == "http-custom-headers":
        for call in context().get("toolCalls", []) or []:
            if call.get("name") in names:
                try:
                    await client.call_tool(call["name"], call.get("arguments") or {})
                except Exception as exc:
                    log(f"call {call['name']} failed: {type(exc).__name__}")
    elif SCENARIO == "sep-2322-client-request-state":
        await client.call_tool("test_mrtr_echo_state", {})
        await client.call_tool("test_mrtr_unrelated", {})
        await client.call_tool("test_mrtr_no_state", {})
        await client.call_tool("test_mrtr_no_result_type", {})
    elif SCENARIO.startswith("auth/") and listed.tools:
        result = await client.call_tool(listed.tools[0].name, {})
        log(f"called {listed.tools[0].name}: is_error={result.is_error}")


async def connect_and_work(url: str, http_client: httpx2.AsyncClient) -> None:
    async with http_client:
        transport = streamable_http_client(url, http_client=http_client)
        async with Client(
            transport,
            mode=mode(),
            elicitation_callback=elicitation,
            sampling_callback=sampling,
            list_roots_callback=roots,
        ) as client:
            await workload(client)


# --- plain mcp 2.x --------------------------------------------------------------------------------------


async def run_plain(url: str) -> None:
    auth = plain_auth(url) if SCENARIO.startswith("auth/") else None
    await connect_and_work(url, httpx2.AsyncClient(auth=auth, timeout=30.0))


def plain_auth(url: str) -> Any:
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.client.auth.extensions.client_credentials import (
        ClientCredentialsOAuthProvider,
        PrivateKeyJWTOAuthProvider,
        SignedJWTParameters,
    )
    from mcp.shared.auth import (
        AuthorizationCodeResult,
        OAuthClientInformationFull,
        OAuthClientMetadata,
        OAuthToken,
    )
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
    if SCENARIO == "auth/enterprise-managed-authorization":
        return plain_id_jag(url, ctx, storage, ctx["_issuer"])
    if SCENARIO == "auth/pre-registration":
        storage.info = OAuthClientInformationFull(
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="client_secret_basic",
        )
    captured: dict[str, str | None] = {}

    async def redirect_handler(authorization_url: str) -> None:
        async with httpx2.AsyncClient() as client:
            response = await client.get(authorization_url, follow_redirects=False)
        location = httpx2.URL(response.headers["location"])
        for name in ("code", "state", "iss"):
            captured[name] = location.params.get(name)

    async def callback_handler() -> AuthorizationCodeResult:
        code = captured.get("code")
        if not code:
            raise RuntimeError("no authorization code in the redirect")
        return AuthorizationCodeResult(code=code, state=captured.get("state"), iss=captured.get("iss"))

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


def plain_id_jag(url: str, ctx: dict[str, Any], storage: Any, issuer: str) -> Any:
    """mcp 2.x does leg 2 (jwt-bearer at the AS); leg 1 (RFC 8693 at the IdP) is the caller's, as in
    the suite's reference clients."""
    from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

    async def id_jag(audience: str, resource: str) -> str:
        async with httpx2.AsyncClient() as client:
            response = await client.post(
                ctx["idp_token_endpoint"],
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "audience": audience,
                    "resource": resource,
                    "subject_token": ctx["idp_id_token"],
                    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                    "client_id": ctx["idp_client_id"],
                },
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    return IdentityAssertionOAuthProvider(
        server_url=url,
        storage=storage,
        client_id=ctx["client_id"],
        client_secret=ctx["client_secret"],
        issuer=issuer,
        assertion_provider=id_jag,
        token_endpoint_auth_method="client_secret_basic",
    )


async def as_issuer(url: str) -> str:
    """The AS issuer the plain ID-JAG provider must be configured with, found the way the suite's
    reference client finds it (RFC 9728 path-aware well-known, then RFC 8414)."""
    origin = str(httpx2.URL(url).copy_with(path="/", query=None)).rstrip("/")
    path = httpx2.URL(url).path.rstrip("/")
    async with httpx2.AsyncClient() as client:
        prm = (await client.get(f"{origin}/.well-known/oauth-protected-resource{path}")).json()
        server = prm["authorization_servers"][0]
        meta = (await client.get(f"{server.rstrip('/')}/.well-known/oauth-authorization-server")).json()
    return str(meta["issuer"])


# --- our SDK ------------------------------------------------------------------------------------------


async def run_sdk(url: str) -> None:
    from _sources import allowed_scopes_for, initial_scope_for, principal_for, token_source_for

    from mcpclient_auth.factory import httpx2_client_factory

    async with httpx2.AsyncClient(follow_redirects=False) as browser:
        source = await token_source_for(SCENARIO, url, browser.get) if SCENARIO.startswith("auth/") else None
        async with SignedRun(
            url,
            token_source=source,
            principal=principal_for(SCENARIO),
            allowed_scopes=allowed_scopes_for(SCENARIO),
            initial_scope=initial_scope_for(SCENARIO),
        ) as signed:
            client = httpx2_client_factory(signed.run)(
                transport=signed.transport(httpx2.AsyncHTTPTransport())
            )
            await connect_and_work(url, client)


async def main_async(url: str) -> None:
    if plain(sys.argv):
        if SCENARIO == "auth/enterprise-managed-authorization":
            os.environ["MCP_CONFORMANCE_CONTEXT"] = json.dumps({**context(), "_issuer": await as_issuer(url)})
        await run_plain(url)
    else:
        await run_sdk(url)


def main() -> None:
    url = server_url(sys.argv)
    log(f"{'plain mcp 2.x' if plain(sys.argv) else 'mcpclient-auth'} against {url}")
    asyncio.run(main_async(url))


if __name__ == "__main__":
    main()
