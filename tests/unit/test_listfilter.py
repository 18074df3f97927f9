"""server/_listfilter: list answers narrowed to the caller's mandate, JSON and SSE, bounded, fail closed.

Driven as ASGI: a tiny app plays the MCP server's answer (chunked as a real server may chunk it), the
filter wraps ``send`` exactly as the middleware does, and the bytes that reach the client are parsed.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from mcpclient_auth.act import Mandate
from mcpclient_auth.constraints import DEFAULT_REGISTRY
from mcpclient_auth.jsonrpc import Call
from mcpclient_auth.keys import Identity
from mcpclient_auth.policy import PERMISSIVE, McpActionPolicy
from mcpclient_auth.server._listfilter import filter_listing, list_filter_send

USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="agent")
TOOLS = {"tools": [{"name": "get_office_locations"}, {"name": "get_employee_salary"}, {"name": "rpc.x"}]}
LIST_ID = 7


def mandate(*caps: Any) -> Mandate:
    return Mandate.issue(USER, agent=AGENT, audience="http://h/mcp", purpose="p", capabilities=list(caps))


def listing(result: dict[str, Any], request_id: Any = LIST_ID) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


async def through(
    chunks: list[bytes],
    media: str,
    granted: Mandate | None,
    *,
    method: str = "tools/list",
    http: str = "POST",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_bytes: int = 1 << 20,
    policy: Any = None,
) -> tuple[dict[str, Any], bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    call = Call("request", method, LIST_ID, None, {})
    wrapped = list_filter_send(
        send, http, call, granted, policy or McpActionPolicy(), DEFAULT_REGISTRY, max_bytes=max_bytes
    )
    total = sum(len(c) for c in chunks)
    headers = [
        (b"content-type", media.encode()),
        (b"content-length", str(total).encode()),
        *(extra_headers or []),
    ]
    await wrapped({"type": "http.response.start", "status": 200, "headers": headers})
    for i, chunk in enumerate(chunks):
        await wrapped({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body", False)
    return dict((k.decode(), v.decode()) for k, v in start["headers"]), body


def sse(*messages: Any, split: int | None = None) -> list[bytes]:
    raw = b"".join(b"event: message\r\ndata: " + json.dumps(m).encode() + b"\r\n\r\n" for m in messages)
    if split is None:
        return [raw]
    return [raw[i : i + split] for i in range(0, len(raw), split)]


def events(body: bytes) -> list[Any]:
    out = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data:
            out.append(json.loads(b"\n".join(data)))
    return out


async def test_json_listing_is_filtered_and_content_length_fixed() -> None:
    body = json.dumps(listing(TOOLS)).encode()
    headers, out = await through(
        [body[:10], body[10:]], "application/json", mandate("mcp.get_office_locations")
    )
    assert json.loads(out)["result"]["tools"] == [{"name": "get_office_locations"}]
    assert headers["content-length"] == str(len(out))


@pytest.mark.parametrize("split", [None, 1, 7, 64])
async def test_sse_listing_is_filtered_whatever_the_chunking(split: int | None) -> None:
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    chunks = sse(progress, listing(TOOLS), split=split)
    headers, out = await through(chunks, "text/event-stream", mandate("mcp.get_employee_salary"))
    first, second = events(out)
    assert first == progress  # other events pass untouched
    assert second["result"]["tools"] == [{"name": "get_employee_salary"}]
    assert "content-length" not in headers
    assert b"event: message" in out


async def test_no_mandate_no_entries_and_permissive_policy_still_checks_tools() -> None:
    body = json.dumps(listing(TOOLS)).encode()
    _, out = await through([body], "application/json", None)
    assert json.loads(out)["result"]["tools"] == []
    _, out = await through([body], "application/json", mandate(), policy=PERMISSIVE)
    assert json.loads(out)["result"]["tools"] == []  # tools/call needs a capability under every policy


async def test_prompts_resources_and_templates() -> None:
    uri_ok = {
        "action": "mcp.rpc.resources.read",
        "constraints": {"args": {"uri": {"one_of": ["a://1", "b://x/2"]}}},
    }
    granted = mandate("mcp.prompt.welcome", uri_ok)
    prompts = {"prompts": [{"name": "welcome"}, {"name": "salary_report"}, {"name": 3}]}
    _, out = await through(
        [json.dumps(listing(prompts)).encode()], "application/json", granted, method="prompts/list"
    )
    assert json.loads(out)["result"]["prompts"] == [{"name": "welcome"}]
    resources = {"resources": [{"uri": "a://1"}, {"uri": "a://2"}, {"name": "no uri"}], "nextCursor": "c"}
    _, out = await through(
        [json.dumps(listing(resources)).encode()], "application/json", granted, method="resources/list"
    )
    assert json.loads(out)["result"] == {"resources": [{"uri": "a://1"}], "nextCursor": "c"}
    templates = {"resourceTemplates": [{"uriTemplate": "b://x/{id}"}, {"uriTemplate": "c://{id}"}]}
    _, out = await through(
        sse(listing(templates)),
        "text/event-stream",
        granted,
        method="resources/templates/list",
    )
    assert events(out)[0]["result"]["resourceTemplates"] == [{"uriTemplate": "b://x/{id}"}]


async def test_oversized_or_encoded_answers_are_never_passed_unfiltered() -> None:
    body = json.dumps(listing(TOOLS)).encode()
    _, out = await through([body], "application/json", mandate(), max_bytes=20)
    assert json.loads(out)["error"]["code"] == -32603 and b"get_employee_salary" not in out
    _, out = await through(sse(listing(TOOLS), split=5), "text/event-stream", mandate(), max_bytes=40)
    assert b"get_employee_salary" not in out and events(out)[-1]["error"]["code"] == -32603
    _, out = await through(
        [b"\x1f\x8b..."], "application/json", mandate(), extra_headers=[(b"content-encoding", b"gzip")]
    )
    assert json.loads(out)["error"]["code"] == -32603
    _, out = await through([b"{not json"], "application/json", mandate())
    assert json.loads(out)["error"]["code"] == -32603


async def test_other_answers_pass_byte_for_byte() -> None:
    error = json.dumps({"jsonrpc": "2.0", "id": LIST_ID, "error": {"code": -1, "message": "x"}}).encode()
    _, out = await through([error], "application/json", mandate())
    assert out == error
    other_id = json.dumps(listing(TOOLS, request_id=99)).encode()
    _, out = await through([other_id], "application/json", mandate())
    assert out == other_id


def test_only_list_requests_and_get_streams_are_wrapped() -> None:
    async def send(message: Any) -> None: ...

    policy, registry = McpActionPolicy(), DEFAULT_REGISTRY
    call = Call("request", "tools/call", 1, "x", {})
    assert list_filter_send(send, "POST", call, None, policy, registry, max_bytes=1) is send
    assert list_filter_send(send, "DELETE", None, None, policy, registry, max_bytes=1) is send
    assert list_filter_send(send, "GET", None, None, policy, registry, max_bytes=1) is not send


async def test_get_stream_filters_listings_by_shape() -> None:
    # A resumed (Last-Event-ID) or legacy-transport answer may ride the GET stream: filtered by shape.
    _, out = await through(sse(listing(TOOLS, request_id=3)), "text/event-stream", mandate(), http="GET")
    assert events(out)[0]["result"]["tools"] == []
    call_result = listing({"content": [{"type": "text", "text": "tools"}]}, request_id=4)
    _, out = await through(sse(call_result), "text/event-stream", mandate(), http="GET")
    assert events(out) == [call_result]


def test_filter_listing_leaves_non_listings_alone() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"content": []}}
    assert filter_listing(message, ("tools",), None, McpActionPolicy(), DEFAULT_REGISTRY) is message
