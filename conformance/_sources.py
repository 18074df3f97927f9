"""Which of our token sources each auth scenario uses (SDK variant of both everything-clients).

Everything here is the SDK's public API: the sources (``AuthorizationCode``, ``ClientCredentials``,
``JwtBearer``, ``IdJag``) and, where a source needs its token endpoint up front, ``discover`` (RFC 9728
then RFC 8414), which is also what the suite's TypeScript reference client does for these grants.
The scenario's credentials come from ``MCP_CONFORMANCE_CONTEXT``.
"""

from __future__ import annotations

from typing import Any

from _common import CIMD_URL, REDIRECT_URI, context, fetch_redirect

from mcpclient_auth import AuthorizationCode, ClientCredentials, DPoP, Identity, IdJag, JwtBearer, Principal
from mcpclient_auth.authz import ID_TOKEN_TYPE, discover

USER = "conformance-user"
#: Scenarios whose authorization server and MCP server want DPoP (RFC 9449, SEP-1932): the source gets
#: a DPoP key of its own (ES256, which the scenario's AS advertises); the run then sends
#: ``Authorization: DPoP`` with a fresh proof per request and answers ``use_dpop_nonce`` at both.
DPOP_SCENARIOS = frozenset({"auth/dpop", "auth/dpop-nonce"})

#: Scenarios whose 403 step-up demands a scope the server's RFC 9728 metadata does not advertise. The
#: run refuses such a challenge by default (``AgentRun(allowed_scopes=)``, ScopeNotAllowed); an
#: operator who trusts the server lists the scopes it may ask for, as here.
STEP_UP_SCOPES: dict[str, list[str]] = {
    # initial 401 scope=mcp:basic, scopes_supported=[mcp:profile], 403 scope=mcp:write
    "auth/scope-step-up": ["mcp:basic", "mcp:profile", "mcp:write"],
}


def allowed_scopes_for(scenario: str) -> list[str] | None:
    """The run's step-up scope allowlist for ``scenario`` (None: the SDK's default)."""
    return STEP_UP_SCOPES.get(scenario)


#: Scenarios whose source is found by discovery up front (the suite's reference client does the same
#: for these grants): their token is obtained before the first request.
_DISCOVERED_UP_FRONT = (
    "auth/client-credentials-basic",
    "auth/client-credentials-jwt",
    "auth/wif-jwt-bearer",
    "auth/enterprise-managed-authorization",
)


def initial_scope_for(scenario: str) -> str:
    """``AgentRun(initial_scope=...)``: the authorization-code scenarios start the way the MCP spec
    describes a client (SEP-835): the first request goes without a token, and its 401 names the
    resource metadata and the scope to ask for."""
    if not scenario.startswith("auth/") or scenario in _DISCOVERED_UP_FRONT:
        return "configured"
    return "challenge"


def principal_for(scenario: str) -> Principal:
    ctx = context()
    if scenario == "auth/enterprise-managed-authorization" and ctx.get("idp_id_token"):
        # ID-JAG leg 1 exchanges the user's ID token issued by the enterprise IdP.
        return Principal(id=USER, subject_token=ctx["idp_id_token"], subject_token_type=ID_TOKEN_TYPE)
    return Principal(id=USER)


async def token_source_for(scenario: str, url: str, http_get: Any) -> Any:
    ctx = context()
    if scenario in ("auth/client-credentials-basic", "auth/client-credentials-jwt"):
        found = await discover(url)
        assert found.server.token_endpoint is not None
        if scenario == "auth/client-credentials-basic":
            return ClientCredentials(
                found.server.token_endpoint,
                client_id=ctx["client_id"],
                client_secret=ctx["client_secret"],
                resource=found.resource.resource,
            )
        key = Identity.from_pem(ctx["private_key_pem"].encode())
        return ClientCredentials(
            found.server.token_endpoint,
            client_id=ctx["client_id"],
            client_key=key,
            issuer=found.server.issuer,  # the assertion's aud (SEP-1046, rfc7523bis)
            resource=found.resource.resource,
        )
    if scenario == "auth/wif-jwt-bearer":
        found = await discover(url)
        assert found.server.token_endpoint is not None
        platform_jwt = ctx["valid_jwt"]
        return JwtBearer(
            found.server.token_endpoint,
            client_id=ctx["client_id"],
            assertion=lambda principal: platform_jwt,  # the workload's platform token, read per request
            resource=found.resource.resource,
        )
    if scenario == "auth/enterprise-managed-authorization":
        found = await discover(url)
        assert found.server.token_endpoint is not None
        return IdJag(
            idp_token_endpoint=ctx["idp_token_endpoint"],
            idp_client_id=ctx["idp_client_id"],
            token_endpoint=found.server.token_endpoint,
            issuer=found.server.issuer,
            client_id=ctx["client_id"],
            client_secret=ctx["client_secret"],
            resource=found.resource.resource,
        )
    pre_registered = scenario == "auth/pre-registration"
    return AuthorizationCode(
        server_url=url,
        interaction=fetch_redirect(http_get),
        redirect_uri=REDIRECT_URI,
        client_id=ctx.get("client_id") if pre_registered else None,
        client_secret=ctx.get("client_secret") if pre_registered else None,
        client_metadata_url=CIMD_URL,
        client_metadata={"client_name": "mcpclient-auth conformance client"},
        dpop=DPoP() if scenario in DPOP_SCENARIOS else None,
    )
