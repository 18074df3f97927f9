"""Classify the JSON-RPC 2.0 message in an MCP request body (pure: no I/O, no httpx).

The request hook reads the exact body bytes it is about to sign and asks :func:`parse` what they
are, so the policy can name the action and the DAG can place the call:

    >>> parse(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search"}}')
    Call(kind='request', method='tools/call', id=3, tool='search')
    >>> parse(b"")
    NotJsonRpc(reason='empty body')

Anything that claims to be JSON but is not a single well-formed JSON-RPC message raises
:class:`~mcpclient_auth.errors.JsonRpcError`: the hook refuses to sign what it cannot classify (fail
closed). Batches are refused too — MCP clients never send them, and one signature cannot name the
action of several calls. Duplicate member names are refused anywhere in the body, because two
parsers that disagree on "first wins" vs "last wins" would disagree on which tool is being called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._encoding import strict_json_loads
from .errors import JsonRpcError

#: What a caller outside the package uses: a custom ``ActionPolicy`` reads a :class:`Call`; a server
#: classifies a body with :func:`parse`. The rest (``TOOLS_CALL``, ``answered_by``) serves the package.
__all__ = ["Call", "NotJsonRpc", "parse"]

TOOLS_CALL = "tools/call"

CallKind = Literal["request", "notification", "response"]

# Media types whose bodies are JSON. Anything else on the endpoint (a form, a file upload) is not ours
# to classify; the hook still signs it, but mints no ECT.
_JSON_MEDIA_SUFFIX = "+json"
_JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Call:
    """One JSON-RPC message, reduced to what the policy and the DAG need.

    ``kind`` is ``"request"`` (has ``method`` and ``id``), ``"notification"`` (``method``, no ``id``)
    or ``"response"`` (a client's answer to a server request: ``id``, no ``method``). ``tool`` is the
    tool name of a ``tools/call`` request, else ``None``.
    """

    kind: CallKind
    method: str | None
    id: str | int | None
    tool: str | None = None
    #: The request's ``params`` object (``None`` when absent, and for responses). What the policy
    #: reads to name an action (a prompt's name) and the constraints check (tool arguments, a
    #: resource ``uri``). Kept out of ``repr`` and equality: arguments may hold personal data.
    params: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    #: For a ``response``: what it answers, judged from its shape — ``"error"`` (an error object),
    #: ``"ping"`` (an empty result), ``"sampling/createMessage"``, ``"elicitation/create"``,
    #: ``"roots/list"``, or ``"result"`` (any other result). ``None`` for requests and notifications.
    answers: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_tool_call(self) -> bool:
        return self.method == TOOLS_CALL


@dataclass(frozen=True, slots=True)
class NotJsonRpc:
    """The body is not a JSON document at all (empty, or a non-JSON content type)."""

    reason: str


def _is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON_MEDIA_TYPE or media.endswith(_JSON_MEDIA_SUFFIX)


def _request_id(message: dict[str, Any]) -> str | int:
    value = message["id"]
    # bool is an int subclass; JSON-RPC ids are strings or integers (MCP forbids null ids).
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise JsonRpcError("JSON-RPC id must be a string or an integer")
    return value


def _tool_name(message: dict[str, Any]) -> str:
    params = message.get("params")
    if not isinstance(params, dict):
        raise JsonRpcError("tools/call without a params object")
    name = params.get("name")
    if not isinstance(name, str):
        raise JsonRpcError("tools/call without a string params.name")
    return name


def parse(body: bytes, *, content_type: str | None = None) -> Call | NotJsonRpc:
    """Classify ``body`` (the exact bytes about to be sent).

    Returns :class:`NotJsonRpc` for an empty body or a ``content_type`` that is not JSON; a
    :class:`Call` for one JSON-RPC 2.0 request, notification or response; raises
    :class:`~mcpclient_auth.errors.JsonRpcError` for anything else (bad JSON, a batch, a missing
    ``jsonrpc``/``method``, a ``tools/call`` without a tool name).
    """
    if content_type is not None and not _is_json_media_type(content_type):
        return NotJsonRpc("content type is not JSON")
    if not body.strip():
        return NotJsonRpc("empty body")
    message = strict_json_loads(body, error=JsonRpcError, what="the JSON-RPC body")
    if isinstance(message, list):
        raise JsonRpcError("JSON-RPC batches are not supported")
    if not isinstance(message, dict):
        raise JsonRpcError("JSON-RPC body is not an object")
    if message.get("jsonrpc") != "2.0":
        raise JsonRpcError('JSON-RPC body lacks "jsonrpc": "2.0"')

    if "method" in message:
        method = message["method"]
        if not isinstance(method, str) or not method:
            raise JsonRpcError("JSON-RPC method must be a non-empty string")
        if "result" in message or "error" in message:
            raise JsonRpcError("JSON-RPC message is both a request and a response")
        tool = _tool_name(message) if method == TOOLS_CALL else None
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            # MCP params are always objects; positional (array) params could hide what is asked for.
            raise JsonRpcError("JSON-RPC params must be an object")
        if "id" not in message:
            return Call("notification", method, None, tool, params)
        return Call("request", method, _request_id(message), tool, params)

    if "id" in message and (("result" in message) != ("error" in message)):
        return Call("response", None, _request_id(message), None, None, _answered(message))
    raise JsonRpcError("JSON-RPC body is neither a request nor a response")


def answered_by(result: Any) -> str:
    """What an answer whose ``result`` is this answers, by its shape (``Call.answers`` of a response;
    also used for the answers MCP 2026-07-28 embeds in a request's ``params.inputResponses``)."""
    return _answered({"result": result})


def _answered(message: dict[str, Any]) -> str:
    """What a client's response answers, from its shape (the client cannot see the server's request).

    Only an error or an empty result (the answer to a server ``ping``) carries nothing the server
    asked the agent's side for; everything else is named after the request it evidently answers, or
    ``"result"``.
    """
    if "error" in message:
        return "error"
    result = message["result"]
    if not isinstance(result, dict):
        return "result"
    keys = set(result) - {"_meta"}
    if not keys:
        return "ping"
    if "roots" in keys:
        return "roots/list"
    if "action" in keys:
        return "elicitation/create"
    if "model" in keys or "role" in keys or "stopReason" in keys:
        return "sampling/createMessage"
    return "result"
