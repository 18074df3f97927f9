"""Reference verifier for MCP servers: a pure ASGI middleware and the pure checks behind it."""

from __future__ import annotations

from ._limits import RequestLimits
from .middleware import PROBLEM_TYPE_PREFIX, STATE_KEY, McpAuthMiddleware, verified_request
from .verify import (
    IncomingHeaders,
    IncomingRequest,
    McpRequestVerifier,
    PendingRequest,
    Rejection,
    VerifiedRequest,
    http_status_for,
)

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "STATE_KEY",
    "IncomingHeaders",
    "IncomingRequest",
    "McpAuthMiddleware",
    "McpRequestVerifier",
    "PendingRequest",
    "Rejection",
    "RequestLimits",
    "VerifiedRequest",
    "http_status_for",
    "verified_request",
]
