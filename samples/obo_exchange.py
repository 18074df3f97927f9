"""Per-user tokens by RFC 8693 token exchange, checked by the MCP server next to the mandate.

    python samples/obo_exchange.py [--out DIR]

Starts a small sample identity provider (a token endpoint for RFC 8693 token exchange) and the HR
server on 127.0.0.1. The HR server verifies the mandate, ECT and signature (the middleware) *and* that
the bearer token was issued by the IdP for the same user the mandate names. The agent exchanges
alice's SSO token for a token for this server once (cached) and sends it on every call; a user whose
SSO token the IdP does not accept gets nothing sent at all (the refusal is in the ledger).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcpclient_auth.authz import TokenExchange
from mcpclient_auth.demo.hr import build_hr_server
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.refusal import refusal_from_error
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpAuthMiddleware, verified_request

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


class SampleIdP:
    """A token endpoint for RFC 8693 token exchange (client_secret_basic or _post). Sample only."""

    def __init__(self, clients: dict[str, str], subjects: dict[str, str]) -> None:
        self.clients = clients
        self.subjects = subjects  # SSO token -> user
        self.issued: dict[str, tuple[str, str]] = {}  # access token -> (user, audience)
        self.requests = 0
        self.app = Starlette(routes=[Route("/token", self.token, methods=["POST"])])

    async def token(self, request: Request) -> JSONResponse:
        self.requests += 1
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret = _basic(request.headers.get("authorization", ""))
        client_id = client_id or form.get("client_id", "")
        secret = secret or form.get("client_secret", "")
        if not client_id or not secrets.compare_digest(self.clients.get(client_id, ""), secret):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != TOKEN_EXCHANGE or form.get("subject_token_type") != ACCESS_TOKEN:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        user = self.subjects.get(form.get("subject_token", ""))
        audience = form.get("audience") or form.get("resource") or ""
        if user is None or not audience:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(32)
        self.issued[access_token] = (user, audience)
        return JSONResponse(
            {
                "access_token": access_token,
                "issued_token_type": ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": 600,
            }
        )


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    client_id, _, secret = base64.b64decode(value).decode().partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


class UserTokenCheck:
    """After McpAuthMiddleware: the bearer token must be the IdP's, for this server and the mandate's user."""

    def __init__(self, app: Any, *, idp: SampleIdP, audience: str) -> None:
        self.app, self.idp, self.audience = app, idp, audience
        self.accepted = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        verified = verified_request(scope) if scope["type"] == "http" else None
        if verified is not None:
            scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").decode().partition(" ")
            issued = self.idp.issued.get(token) if scheme.lower() == "bearer" else None
            if issued != (verified.principal, self.audience):
                response = JSONResponse({"error": "invalid_token"}, status_code=401)
                await response(scope, receive, send)
                return
            self.accepted += 1
        await self.app(scope, receive, send)


async def call_as(
    principal: Principal, url: str, idp_url: str, secret: str, agent: Identity, user: Identity, ledger: Path
) -> None:
    run = AgentRun(
        agent=agent,
        issuer=user,
        purpose="Where are our offices?",
        capabilities=["mcp.get_office_locations"],
        endpoint=url,
        ledger=ledger,
        principal=principal,
        token_source=TokenExchange(
            f"{idp_url}/token", client_id="hr-agent", client_secret=secret, audience=url
        ),
    )
    async with (
        run,
        run.httpx_client_factory()() as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        try:
            await session.initialize()
            offices = await session.call_tool("get_office_locations", {})
            print(f"{principal.id}: offices:", offices.content[0].text)  # type: ignore[union-attr]
        except McpError as exc:  # the exchange failed: answered locally, nothing was sent
            print(f"{principal.id}: refused:", refusal_from_error(exc))


async def main(out: Path) -> int:
    alice = Identity.generate("ES256", name="alice")
    mallory = Identity.generate("ES256", name="mallory")
    agent = Identity.generate("ES256", name="hr-agent")
    trust = TrustStore()  # who may sign what: each user's key for that user; one agent key
    trust.add_issuer(alice)
    trust.add_issuer(mallory)
    trust.add_agent(agent)
    secret = secrets.token_urlsafe(24)
    idp = SampleIdP(clients={"hr-agent": secret}, subjects={"alice-sso-token": "alice"})
    ledger = out / "ledger.jsonl"
    idp_port, hr_port = free_port(), free_port()
    idp_url, url = f"http://127.0.0.1:{idp_port}", f"http://127.0.0.1:{hr_port}/mcp"
    checks: list[UserTokenCheck] = []

    def token_check(app: Any) -> UserTokenCheck:  # keep a handle on the instance Starlette builds
        checks.append(UserTokenCheck(app, idp=idp, audience=url))
        return checks[-1]

    hr = build_hr_server().http_app(
        path="/mcp",
        middleware=[Middleware(McpAuthMiddleware, trust=trust, audience=url), Middleware(token_check)],
    )
    with running(idp.app, idp_port), running(hr, hr_port):
        await call_as(
            Principal(id="alice", subject_token="alice-sso-token"), url, idp_url, secret, agent, alice, ledger
        )
        await call_as(
            Principal(id="mallory", subject_token="forged"), url, idp_url, secret, agent, mallory, ledger
        )
    print(f"token requests at the IdP: {idp.requests} (one for alice, cached for all her calls; one refused)")
    print(f"requests the HR server accepted with alice's own token: {sum(c.accepted for c in checks)}")

    for entry in Ledger.open(ledger).entries():
        label = entry.meta.get("tool") or entry.meta.get("method") or entry.meta.get("code") or ""
        print(f"{entry.seq:3} {entry.kind:9} {entry.meta.get('principal') or '':8} {label}")
    report = verify_ledger(ledger, trust)
    print("ledger verified:", report.ok, "->", ledger)
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for ledger.jsonl (default: a temp dir)"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mcpclient-auth-"))
    out.mkdir(parents=True, exist_ok=True)
    raise SystemExit(asyncio.run(main(out)))
