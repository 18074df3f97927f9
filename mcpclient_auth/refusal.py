"""Local refusals as JSON-RPC errors, and back again (pure: no I/O, no httpx).

When our layer refuses a call inside an MCP session (mandate denial, missing user token, policy
error), raising from an httpx hook would tear down the whole mcp 1.x session. Instead the client's
transport answers the request locally with a JSON-RPC error for its id (DESIGN §3):

    >>> import json
    >>> from mcpclient_auth.errors import MandateDenied
    >>> body = refusal_body(7, MandateDenied("not granted", action="mcp.x"))
    >>> json.loads(body)["error"]["code"], json.loads(body)["error"]["data"]["code"]
    (-32003, 'mandate_denied')

``ClientSession`` then raises an ordinary ``McpError``; :func:`error_from_jsonrpc` turns its error
object back into the typed exception (``MandateDenied`` here), which adapters re-raise or show the
model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import errors
from ._encoding import compact_json
from .errors import McpClientAuthError

#: For adapters and callers of a plain session: recognise a refusal and get the typed error back.
#: ``refusal_body`` / ``error_class_for`` serve the package's transports.
__all__ = ["REFUSAL_CODE", "error_from_jsonrpc", "is_refusal", "refusal_from_error", "refusal_text"]

#: The JSON-RPC ``error.code`` of every local refusal (implementation-defined server-error range).
REFUSAL_CODE = -32003


def refusal_body(request_id: str | int, error: McpClientAuthError) -> bytes:
    """The compact JSON-RPC error response answering ``request_id`` with ``error``.

    ``error.data`` is :meth:`McpClientAuthError.to_dict` (a stable ``code`` plus safe details, never a
    secret) with ``"source": "mcpclient-auth"`` so a reader can tell it was not the server's.
    """
    data = dict(error.to_dict())
    data["source"] = "mcpclient-auth"
    message = f"refused by mcpclient-auth: {error.message} ({error.code})"
    return compact_json(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": REFUSAL_CODE, "message": message, "data": data},
        }
    )


def _build_registry() -> dict[str, type[McpClientAuthError]]:
    # The first class in the module with a given code is the most general one carrying it (the
    # hierarchy is declared base-first), e.g. "token_exchange_failed" -> MissingSubjectToken's family.
    registry: dict[str, type[McpClientAuthError]] = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, McpClientAuthError):
            registry.setdefault(cls.code, cls)
    # Shared codes resolve to their common base, not to an arbitrary subclass.
    registry["token_exchange_failed"] = errors.AuthorizationError
    return registry


_REGISTRY = _build_registry()


def error_class_for(code: str) -> type[McpClientAuthError]:
    """The error class for a stable ``code`` (``McpClientAuthError`` when unknown)."""
    return _REGISTRY.get(code, McpClientAuthError)


def is_refusal(error: Mapping[str, Any]) -> bool:
    """Whether a JSON-RPC ``error`` object is one of our local refusals."""
    data = error.get("data")
    return (
        error.get("code") == REFUSAL_CODE
        and isinstance(data, Mapping)
        and data.get("source") == "mcpclient-auth"
        and isinstance(data.get("code"), str)
    )


def error_from_jsonrpc(error: Mapping[str, Any]) -> McpClientAuthError | None:
    """The typed exception for a refusal's JSON-RPC ``error`` object, or ``None`` if it is not one."""
    if not is_refusal(error):
        return None
    data = dict(error["data"])
    code = str(data.pop("code"))
    message = str(data.pop("message", "") or error.get("message", ""))
    data.pop("source", None)
    cls = error_class_for(code)
    details = {k: v for k, v in data.items() if isinstance(k, str) and k.isidentifier()}
    exc: McpClientAuthError
    try:
        exc = cls(message, **details)
    except TypeError:  # a subclass with a narrower constructor
        exc = cls(message)
    exc.code = code
    return exc


def refusal_from_error(error: BaseException) -> McpClientAuthError | None:
    """The typed exception behind an MCP client error that is one of our local refusals, else ``None``.

    Duck-typed on ``error.error``, the JSON-RPC error object (a pydantic model) of mcp 1.x's
    ``McpError`` and mcp 2.x's ``MCPError`` alike, so every adapter shares this one mapping and this
    module imports neither mcp.
    """
    data = getattr(error, "error", None)
    dump = getattr(data, "model_dump", None)
    if not callable(dump):
        return None
    payload = dump(mode="json", exclude_none=True)
    return error_from_jsonrpc(payload) if isinstance(payload, Mapping) else None


def refusal_text(code: str, message: str) -> str:
    """What a model reads when a call was refused locally (shared by the LangChain adapters)."""
    return (
        f"This tool call was refused before it was sent ({code}): {message}. "
        "It is outside what this agent is authorised to do; do not retry it."
    )
