"""What both everything-clients share: the suite's contract, the signed run, and the checks at the end.

The suite runs ``<command> <server-url>`` with ``MCP_CONFORMANCE_SCENARIO`` (and, for some scenarios,
``MCP_CONFORMANCE_CONTEXT``, ``MCP_CONFORMANCE_PROTOCOL_VERSION``) in the environment; the client must
exit 0 when it did what the scenario asks.

In the SDK variant every scenario runs inside an :class:`~mcpclient_auth.AgentRun` with a ledger:
every request to the MCP endpoint is authorised, chained, signed and recorded by the SDK's hooks, and
:class:`SignedRun` re-verifies each one with the SDK's own :class:`McpRequestVerifier` as it leaves
(a rejection fails the scenario) and verifies the ledger when the run is over (a failed verification
fails the scenario). Only the SDK's public API is used.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcpclient_auth import AgentRun, Identity, Principal, TrustStore, verify_ledger
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection

SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
PROTOCOL_VERSION = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")
#: What the suite's reference client uses as its Client ID Metadata Document URL (CIMD).
CIMD_URL = "https://conformance-test.local/client-metadata.json"
REDIRECT_URI = "http://localhost:3000/callback"

#: Tools the suite's scenarios call; the mandate grants exactly these (plus any named in the context).
SCENARIO_TOOLS = (
    "add_numbers",
    "test_reconnection",
    "test_client_elicitation_defaults",
    "test-tool",
    "json_schema_echo",
    "valid_tool",
    "test_mrtr_echo_state",
    "test_mrtr_unrelated",
    "test_mrtr_no_state",
    "test_mrtr_no_result_type",
)


def log(message: str) -> None:
    print(f"[{SCENARIO}] {message}", file=sys.stderr, flush=True)


def server_url(argv: list[str]) -> str:
    urls = [a for a in argv[1:] if not a.startswith("--")]
    if not urls:
        raise SystemExit("usage: client_stack_X.py [--plain] <server-url>")
    return urls[-1]


def plain(argv: list[str]) -> bool:
    return "--plain" in argv


def context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    if not raw:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def artifacts() -> Path:
    configured = os.environ.get("CONFORMANCE_ARTIFACTS")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="mcp-conformance-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def scenario_tools() -> list[str]:
    names = list(SCENARIO_TOOLS)
    for call in context().get("toolCalls", []) or []:
        name = call.get("name") if isinstance(call, dict) else None
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


#: Session-level methods the clients send; granted too, so the run also works under a strict policy
#: (every method inside the mandate), not only under today's default where they need no capability.
SESSION_METHODS = (
    "initialize",
    "notifications/initialized",
    "notifications/cancelled",
    "server/discover",
    "ping",
    "tools/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    # the client's answers to server requests are named after what they answer (policy default)
    "elicitation/create",
    "sampling/createMessage",
    "roots/list",
)


def capabilities(tools: list[str]) -> list[str]:
    from mcpclient_auth.policy import is_action

    # A tool whose name is no legal action cannot be granted; calling it is refused locally.
    granted = [f"mcp.{name}" for name in tools if is_action(name)]
    granted += ["mcp.rpc." + method.replace("/", ".") for method in SESSION_METHODS]
    return [*granted, "mcp.rpc.response", "mcp.rpc.response.result"]  # other answers


def fetch_redirect(http_get: Any) -> Any:
    """The user's part of an authorization-code flow, automated the way the suite expects: GET the
    authorization URL (the suite's AS approves at once) and hand back the *whole* redirect URL."""

    async def interact(authorization_url: str) -> str:
        response = await http_get(authorization_url)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(
                f"authorization endpoint answered HTTP {response.status_code} without a redirect"
            )
        return str(location)

    return interact


class SignedRun:
    """An :class:`AgentRun` for one scenario, whose requests are re-verified and whose ledger is
    verified at the end. ``async with SignedRun(url, ...) as signed: signed.run ...``"""

    def __init__(
        self,
        url: str,
        *,
        token_source: Any = None,
        principal: Principal | None = None,
        scopes: list[str] | None = None,
        allowed_scopes: list[str] | None = None,
        initial_scope: str = "configured",
    ) -> None:
        self.url = url
        self.dir = artifacts()
        self.agent = Identity.generate(name="conformance-agent")
        self.user = Identity.generate(name="conformance-user")
        self.ledger_path = self.dir / f"ledger-{os.getpid()}.jsonl"
        self.run = AgentRun(
            agent=self.agent,
            issuer=self.user,
            purpose=f"MCP conformance scenario {SCENARIO or '?'}",
            capabilities=capabilities(scenario_tools()),
            endpoint=url,
            ledger=self.ledger_path,
            principal=principal or Principal(id="conformance-user"),
            token_source=token_source,
            scopes=scopes,
            discover_resource_metadata=token_source is not None,
            allowed_scopes=allowed_scopes,
            initial_scope="challenge" if initial_scope == "challenge" else "configured",
            audience=url,
        )
        self.trust = self._trust()
        self.verifier = McpRequestVerifier(self.trust, audience=url)
        self.verified = 0
        self.rejected: list[str] = []

    def _trust(self) -> TrustStore:
        store = TrustStore()
        add_issuer = getattr(store, "add_issuer", None)
        add_agent = getattr(store, "add_agent", None)
        if add_issuer is not None and add_agent is not None:  # the trust-roles API, once merged
            add_issuer(self.user)
            add_agent(self.agent)
        else:
            store.add(self.user)
            store.add(self.agent)
        return store

    async def verify_request(self, request: Any) -> None:
        """Re-verify a request that is about to leave for the MCP endpoint, as a server would."""
        if urlsplit(str(request.url))._replace(query="").geturl() != self.url:
            return  # OAuth discovery or token requests: not ours to sign, not ours to check
        body = await request.aread()
        incoming = IncomingRequest(
            method=request.method,
            url=str(request.url),
            headers=IncomingHeaders(list(request.headers.raw)),
            content=body,
        )
        outcome = self.verifier.check(incoming, now=time.time())
        if isinstance(outcome, Rejection):
            self.rejected.append(f"{request.method} {getattr(outcome.error, 'code', '?')}: {outcome.error}")
        else:
            self.verified += 1

    def transport(self, inner: Any) -> Any:
        """The innermost transport of a client built by the run's factory: it sees exactly the requests
        that go to the network (a call the SDK refused locally never reaches it)."""
        return _VerifyingTransport(inner, self)

    def httpx_factory(self) -> Any:
        """mcp 1.x: the run's factory, each client it builds sending through :meth:`transport`."""
        import httpx

        factory = self.run.httpx_client_factory()

        def build(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("transport", self.transport(httpx.AsyncHTTPTransport()))
            return factory(*args, **kwargs)

        return build

    async def __aenter__(self) -> SignedRun:
        await self.run.__aenter__()
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        await self.run.__aexit__(kind, exc, tb)
        report = verify_ledger(self.ledger_path, self.trust)
        log(
            f"ledger: {report.entries} entries, {report.tokens_verified} tokens verified, ok={report.ok}; "
            f"requests re-verified: {self.verified}, rejected: {len(self.rejected)}"
        )
        # The harness reads this marker: a scenario that expects the client to fail (iss-wrong-issuer,
        # resource-mismatch...) still needs a ledger that verifies and no rejected request.
        marker: dict[str, Any] = {
            "ok": report.ok and not self.rejected,
            "ledger_ok": report.ok,
            "ledger_failures": sorted({failure.check for failure in report.failures}),
            "entries": report.entries,
            "verified": self.verified,
            "rejected": len(self.rejected),
            "rejections": self.rejected[:5],
        }
        (self.dir / f"signed-run-{os.getpid()}.json").write_text(json.dumps(marker))
        if exc is not None:
            return
        if not report.ok:
            raise SystemExit(f"ledger verification failed: {[str(f) for f in report.failures][:5]}")
        if self.rejected:
            raise SystemExit(f"McpRequestVerifier rejected requests: {self.rejected[:5]}")
        if self.verified == 0:
            raise SystemExit("no request to the MCP endpoint was signed")


class _VerifyingTransport:
    """Duck-typed async transport (httpx or httpx2): verify, then send through ``inner``."""

    def __init__(self, inner: Any, signed: SignedRun) -> None:
        self.inner = inner
        self.signed = signed

    async def handle_async_request(self, request: Any) -> Any:
        await self.signed.verify_request(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
