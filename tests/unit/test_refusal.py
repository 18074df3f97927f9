"""refusal: local JSON-RPC error bodies and their way back to typed exceptions."""

from __future__ import annotations

import json

import pytest

from mcpclient_auth.errors import (
    ActionMappingError,
    AuthorizationError,
    MandateDenied,
    McpClientAuthError,
    TokenExchangeUnavailable,
)
from mcpclient_auth.refusal import (
    REFUSAL_CODE,
    error_class_for,
    error_from_jsonrpc,
    is_refusal,
    refusal_body,
    refusal_from_error,
)


def test_refusal_body_shape() -> None:
    message = json.loads(refusal_body("r-1", MandateDenied("not granted", action="mcp.x", tool="x")))
    assert message["jsonrpc"] == "2.0" and message["id"] == "r-1"
    error = message["error"]
    assert error["code"] == REFUSAL_CODE == -32003
    assert "not granted" in error["message"] and "mandate_denied" in error["message"]
    assert error["data"] == {
        "code": "mandate_denied",
        "message": "not granted",
        "action": "mcp.x",
        "tool": "x",
        "source": "mcpclient-auth",
    }


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (MandateDenied("m", action="mcp.a"), MandateDenied),
        (ActionMappingError("bad name"), ActionMappingError),
        (TokenExchangeUnavailable("idp down"), AuthorizationError),
    ],
)
def test_round_trip_to_typed_errors(error: McpClientAuthError, cls: type[McpClientAuthError]) -> None:
    back = error_from_jsonrpc(json.loads(refusal_body(1, error))["error"])
    assert isinstance(back, cls)
    assert back.code == error.code and back.message == error.message


def test_round_trip_keeps_details() -> None:
    back = error_from_jsonrpc(json.loads(refusal_body(1, MandateDenied("m", action="mcp.a")))["error"])
    assert isinstance(back, MandateDenied) and back.action == "mcp.a"
    retry = error_from_jsonrpc(json.loads(refusal_body(1, TokenExchangeUnavailable("x")))["error"])
    assert isinstance(retry, AuthorizationError) and retry.retryable is True and retry.reason == "exchange_unavailable"


def test_server_errors_are_not_refusals() -> None:
    assert error_from_jsonrpc({"code": -32602, "message": "unknown tool"}) is None
    # same code, but not produced by us
    assert not is_refusal({"code": REFUSAL_CODE, "message": "x", "data": {"code": "mandate_denied"}})
    assert error_from_jsonrpc({"code": REFUSAL_CODE, "message": "x"}) is None


def test_unknown_codes_map_to_the_root_error() -> None:
    assert error_class_for("something_new") is McpClientAuthError
    data = {"code": "something_new", "message": "m", "source": "mcpclient-auth"}
    back = error_from_jsonrpc({"code": REFUSAL_CODE, "message": "m", "data": data})
    assert type(back) is McpClientAuthError and back.code == "something_new"


def test_refusal_from_error_reads_mcp_1_and_mcp_2_errors_alike() -> None:
    # mcp 1.x's McpError (stack A); mcp 2.x's MCPError has the same ``.error`` model (duck-typed).
    from mcp.shared.exceptions import McpError
    from mcp.types import ErrorData

    error_object = json.loads(refusal_body(3, MandateDenied("not granted", action="mcp.x")))["error"]
    back = refusal_from_error(McpError(ErrorData.model_validate(error_object)))
    assert isinstance(back, MandateDenied) and back.action == "mcp.x"

    class Mcp2Error(Exception):  # the shape of mcp 2.x's MCPError, without importing it
        def __init__(self, error: ErrorData) -> None:
            super().__init__(error.message)
            self.error = error

    assert isinstance(refusal_from_error(Mcp2Error(ErrorData.model_validate(error_object))), MandateDenied)
    server_error = ErrorData(code=-32602, message="unknown tool")
    assert refusal_from_error(McpError(server_error)) is None
    assert refusal_from_error(ValueError("x")) is None
    assert refusal_from_error(Mcp2Error.__new__(Mcp2Error)) is None  # no .error at all
