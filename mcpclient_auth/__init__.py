"""mcpclient-auth: accountable MCP calls.

Every JSON-RPC call an agent sends is authorised for a user, covered by a signed ACT mandate,
recorded as an ECT node of a signed execution DAG, bound to its bytes by an RFC 9421 signature and
written to a tamper-evident ledger. See the README for the model and the quickstart.

    from mcpclient_auth import AgentRun, Identity

    run = AgentRun(agent=Identity.generate(name="agent-1"), issuer=Identity.generate(name="alice"),
                   purpose="Answer HR questions", capabilities=["mcp.get_office_locations"],
                   endpoint="http://127.0.0.1:8000/mcp", ledger="ledger.jsonl")
    factory = run.httpx_client_factory()     # hand it to MultiServerMCPClient / streamablehttp_client
"""

from __future__ import annotations

from ._context import acting_for, current_run, use_run
from .act import ExecutionRecord, Mandate, verify_delegation_chain
from .authz import (
    AccessToken,
    AuthorizationCode,
    ClientCredentials,
    DPoP,
    EntraOnBehalfOf,
    IdJag,
    JwtBearer,
    StaticTokens,
    TokenCache,
    TokenExchange,
    TokenSource,
)
from .digest import content_digest, verify_content_digest
from .ect import ExecutionContextToken
from .errors import McpClientAuthError
from .factory import multi_run_client_factory
from .httpsig import RequestSigner, RequestVerifier, SignatureResult, VerifiedSignature
from .keys import Identity, PublicKey, TrustStore
from .ledger import Ledger, LedgerReader, Report, verify_ledger
from .policy import ActionPolicy, McpActionPolicy
from .principal import Principal
from .replay import MemoryReplayStore, ReplayCache, ReplayStore
from .run import AgentRun
from .wit import WorkloadIdentityToken

__version__ = "0.1.0"

__all__ = [
    "AccessToken",
    "ActionPolicy",
    "AgentRun",
    "AuthorizationCode",
    "ClientCredentials",
    "DPoP",
    "EntraOnBehalfOf",
    "ExecutionContextToken",
    "ExecutionRecord",
    "IdJag",
    "Identity",
    "JwtBearer",
    "Ledger",
    "LedgerReader",
    "Mandate",
    "McpActionPolicy",
    "McpClientAuthError",
    "MemoryReplayStore",
    "Principal",
    "PublicKey",
    "ReplayCache",
    "ReplayStore",
    "Report",
    "RequestSigner",
    "RequestVerifier",
    "SignatureResult",
    "StaticTokens",
    "TokenCache",
    "TokenExchange",
    "TokenSource",
    "TrustStore",
    "VerifiedSignature",
    "WorkloadIdentityToken",
    "__version__",
    "acting_for",
    "content_digest",
    "current_run",
    "multi_run_client_factory",
    "use_run",
    "verify_content_digest",
    "verify_delegation_chain",
    "verify_ledger",
]
