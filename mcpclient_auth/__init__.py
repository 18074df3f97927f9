"""mcpclient-auth: accountable MCP calls.

Every JSON-RPC call an agent sends is authorised for a user, covered by a signed ACT mandate,
recorded as an ECT node of a signed execution DAG, bound to its bytes by an RFC 9421 signature and
written to a tamper-evident ledger. See the README for the model and the quickstart.
"""

from __future__ import annotations

from .errors import McpClientAuthError
from .keys import Identity, PublicKey, TrustStore

__version__ = "0.1.0"

__all__ = [
    "Identity",
    "McpClientAuthError",
    "PublicKey",
    "TrustStore",
    "__version__",
]
