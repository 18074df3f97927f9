"""jsonrpc.parse: body bytes -> Call | NotJsonRpc, typed errors for everything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.errors import JsonRpcError
from mcpclient_auth.jsonrpc import Call, NotJsonRpc, parse


def body(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def test_tool_call_request() -> None:
    call = parse(
        body(
            {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
        )
    )
    assert call == Call("request", "tools/call", 7, "search")
    assert isinstance(call, Call) and call.is_tool_call


def test_session_request_notification_and_response() -> None:
    assert parse(body({"jsonrpc": "2.0", "id": "a", "method": "initialize", "params": {}})) == Call(
        "request", "initialize", "a", None
    )
    assert parse(body({"jsonrpc": "2.0", "method": "notifications/initialized"})) == Call(
        "notification", "notifications/initialized", None, None
    )
    assert parse(body({"jsonrpc": "2.0", "id": 4, "result": {}})) == Call("response", None, 4, None)
    assert parse(body({"jsonrpc": "2.0", "id": 4, "error": {"code": 1, "message": "x"}})) == Call(
        "response", None, 4, None
    )


def test_whitespace_around_the_document_is_fine() -> None:
    assert parse(b'  \n{"jsonrpc":"2.0","method":"ping","id":1}\n') == Call("request", "ping", 1, None)


@pytest.mark.parametrize("raw", [b"", b"   ", b"\r\n"])
def test_empty_bodies_are_not_json_rpc(raw: bytes) -> None:
    assert isinstance(parse(raw), NotJsonRpc)


def test_non_json_content_type_is_not_json_rpc() -> None:
    result = parse(b"a=1&b=2", content_type="application/x-www-form-urlencoded")
    assert result == NotJsonRpc("content type is not JSON")
    # a JSON content type with parameters, or a +json suffix, is parsed
    assert isinstance(
        parse(b'{"jsonrpc":"2.0","method":"ping","id":1}', content_type="application/json; charset=utf-8"),
        Call,
    )
    assert isinstance(
        parse(b'{"jsonrpc":"2.0","method":"ping","id":1}', content_type="application/vnd.x+json"), Call
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b'[{"jsonrpc":"2.0","method":"ping","id":1}]', "batches"),
        (b'"hello"', "not an object"),
        (b'{"method":"ping","id":1}', '"jsonrpc"'),
        (b'{"jsonrpc":"1.0","method":"ping","id":1}', '"jsonrpc"'),
        (b'{"jsonrpc":"2.0","id":1}', "neither"),
        (b'{"jsonrpc":"2.0","method":"","id":1}', "non-empty"),
        (b'{"jsonrpc":"2.0","method":5,"id":1}', "non-empty"),
        (b'{"jsonrpc":"2.0","method":"tools/call","id":1}', "params"),
        (b'{"jsonrpc":"2.0","method":"tools/call","id":1,"params":{"name":3}}', "params.name"),
        (b'{"jsonrpc":"2.0","method":"ping","id":true}', "id must be"),
        (b'{"jsonrpc":"2.0","method":"ping","id":null}', "id must be"),
        (b'{"jsonrpc":"2.0","method":"ping","id":1.5}', "id must be"),
        (b'{"jsonrpc":"2.0","id":1,"result":{},"error":{}}', "neither"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}', "both"),
        (b'{"jsonrpc":"2.0","method":"ping","id":1} {}', "trailing"),
    ],
)
def test_malformed_bodies_raise_json_rpc_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(JsonRpcError) as info:
        parse(raw)
    assert fragment in str(info.value)
    assert info.value.code == "jsonrpc_malformed"


def test_duplicate_member_names_are_refused_anywhere() -> None:
    # "first wins" and "last wins" parsers would disagree on which tool is called
    smuggled = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_all"}}'
    )
    with pytest.raises(JsonRpcError, match="duplicate"):
        parse(smuggled)


def test_deep_nesting_is_a_typed_error() -> None:
    with pytest.raises(JsonRpcError):
        parse(b'{"jsonrpc":"2.0","method":"ping","id":1,"params":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_result_or_a_typed_error(raw: bytes) -> None:
    try:
        result = parse(raw)
    except JsonRpcError:
        return
    assert isinstance(result, Call | NotJsonRpc)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error", "x"]),
        json_values | st.just("2.0") | st.just("tools/call"),
        max_size=6,
    )
)
def test_arbitrary_json_objects_give_a_consistent_call_or_a_typed_error(message: dict[str, object]) -> None:
    try:
        result = parse(body(message))
    except JsonRpcError:
        return
    assert isinstance(result, Call)
    assert message["jsonrpc"] == "2.0"
    if result.kind == "response":
        assert result.method is None and "method" not in message
    else:
        assert result.method == message["method"]
        assert (result.kind == "request") == ("id" in message)
    if result.method == "tools/call":
        assert result.tool == message["params"]["name"]  # type: ignore[index]
