"""Show each caller only what its mandate grants: filter MCP list responses in the middleware.

The list calls are protocol plumbing (:mod:`mcpclient_auth.policy`): any verified caller may send
them. What they *answer* is narrowed here, as
:func:`~mcpclient_auth.adapters.langchain_mcp_adapters.narrow_tools` narrows on the client, so a model
is never offered a tool, prompt or resource it may not use:

- ``tools/list`` -> ``result.tools``: a tool stays when its action (``mcp.<name>``) is granted;
- ``prompts/list`` -> ``result.prompts``: a prompt stays when ``mcp.prompt.<name>`` is granted;
- ``resources/list`` -> ``result.resources``: a resource stays when ``resources/read`` of its ``uri``
  is granted and passes the capability's argument constraints (``{"args": {"uri": ...}}``);
- ``resources/templates/list`` -> ``result.resourceTemplates``: a template stays when
  ``resources/read`` is granted without a ``uri`` condition, or one of the allowed URIs matches it.

An entry whose action needs no capability under the server's policy (e.g. ``permissive``) stays.
Both answer forms are handled: ``application/json`` (buffered, bounded, ``Content-Length`` fixed) and
``text/event-stream`` (each event buffered until complete, bounded; only the JSON-RPC response to the
list request is rewritten, other events pass byte for byte). On the SSE ``GET`` stream (where a
resumed or legacy-transport answer may travel) every response event shaped like a listing is
filtered. What cannot be filtered — an encoded body, an event or body over the bound, a listing
that is not JSON — is never passed on: the caller gets a JSON-RPC error instead (fail closed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ..act import Mandate
from ..constraints import ConstraintRegistry
from ..errors import ActionMappingError, ConstraintViolated
from ..jsonrpc import Call
from ..policy import ActionPolicy

__all__ = ["LIST_RESULT_KEYS", "filter_listing", "list_filter_send"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

#: List method -> the member of its result that holds the entries.
LIST_RESULT_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
_MAX_TEMPLATE = 2048
_UNFILTERABLE = -32603


class _Judge:
    """Decides, entry by entry, what the caller's mandate grants (pure)."""

    def __init__(self, mandate: Mandate | None, policy: ActionPolicy, registry: ConstraintRegistry) -> None:
        self.mandate = mandate
        self.policy = policy
        self.registry = registry

    def _granted(self, call: Call) -> tuple[bool, str | None]:
        """(kept?, action) for a call the entry would lead to."""
        try:
            action = self.policy.action_for(call)
        except ActionMappingError:
            return False, None
        if not self.policy.requires_capability(call, action):
            return True, None
        return (self.mandate is not None and self.mandate.allows(action)), action

    def keep(self, key: str, entry: Any) -> bool:
        if not isinstance(entry, Mapping):
            return False
        if key == "tools":
            name = entry.get("name")
            return isinstance(name, str) and self._granted(Call("request", "tools/call", None, name))[0]
        if key == "prompts":
            name = entry.get("name")
            return (
                isinstance(name, str)
                and self._granted(Call("request", "prompts/get", None, None, {"name": name}))[0]
            )
        if key == "resources":
            uri = entry.get("uri")
            if not isinstance(uri, str):
                return False
            call = Call("request", "resources/read", None, None, {"uri": uri})
            kept, action = self._granted(call)
            if not kept or action is None or self.mandate is None:
                return kept
            try:  # argument constraints only: a used-up budget does not hide what exists
                self.registry.evaluate(_argument_constraints(self.mandate.constraints(action)), call, action)
            except ConstraintViolated:
                return False
            return True
        if key == "resourceTemplates":
            template = entry.get("uriTemplate")
            if not isinstance(template, str):
                return False
            call = Call("request", "resources/read", None, None, {"uri": template})
            kept, action = self._granted(call)
            if not kept or action is None or self.mandate is None:
                return kept
            return _template_allowed(template, self.mandate.constraints(action))
        return False

    def listing(self, key: str, result: Mapping[str, Any]) -> dict[str, Any]:
        entries = result.get(key)
        kept = [e for e in entries if self.keep(key, e)] if isinstance(entries, list) else []
        return {**result, key: kept}


def _argument_constraints(constraints: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not constraints or "args" not in constraints:
        return None
    return {"args": constraints["args"]}


def _template_allowed(template: str, constraints: Mapping[str, Any] | None) -> bool:
    args = (constraints or {}).get("args")
    condition = args.get("uri") if isinstance(args, Mapping) else None
    if not isinstance(condition, Mapping) or len(template) > _MAX_TEMPLATE:
        return condition is None
    values = [condition["eq"]] if "eq" in condition else list(condition.get("one_of") or [])
    pattern = _template_pattern(template)
    return any(isinstance(v, str) and pattern.fullmatch(v) is not None for v in values)


def _template_pattern(template: str) -> re.Pattern[str]:
    # RFC 6570 expressions ({var}, {+path}, ...) may expand to anything: match any text there.
    parts = re.split(r"\{[^{}]*\}", template)
    return re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)


def filter_listing(
    message: Any,
    keys: tuple[str, ...],
    mandate: Mandate | None,
    policy: ActionPolicy,
    registry: ConstraintRegistry,
    *,
    request_id: Any = None,
) -> Any:
    """``message`` with its listing filtered, or ``message`` itself when it is not a listing answer.

    ``keys``: the result members to filter; ``request_id``: only the response with this id (``None``:
    any response, judged by shape — the GET stream).
    """
    if not isinstance(message, dict) or "result" not in message:
        return message
    if request_id is not None and message.get("id") != request_id:
        return message
    result = message["result"]
    if not isinstance(result, dict):
        return message
    judge = _Judge(mandate, policy, registry)
    present = [key for key in keys if key in result]
    if not present:
        return message
    filtered = dict(result)
    for key in present:
        filtered = judge.listing(key, filtered)
    return {**message, "result": filtered}


def _unfilterable(request_id: Any) -> bytes:
    document = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": _UNFILTERABLE,
            "message": "the listing could not be narrowed to the caller's mandate",
        },
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class _ListFilterSend:
    """An ASGI ``send`` that rewrites the listing in a JSON or SSE response (see the module docstring)."""

    def __init__(
        self,
        send: Send,
        rewrite: Callable[[Any], Any],
        request_id: Any,
        max_bytes: int,
        *,
        json_allowed: bool,
    ) -> None:
        self._send = send
        self._rewrite = rewrite
        self._id = request_id
        self._max = max_bytes
        self._json_allowed = json_allowed
        self._mode = "pass"
        self._start: Message | None = None
        self._buffer = bytearray()
        self._event: list[bytes] = []
        self._event_size = 0
        self._done = False

    async def __call__(self, message: Message) -> None:
        if self._done:
            return
        if message["type"] == "http.response.start":
            await self._on_start(message)
        elif message["type"] == "http.response.body":
            await self._on_body(message)
        else:
            await self._send(message)

    async def _on_start(self, message: Message) -> None:
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        media = b""
        encoded = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
            elif lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                encoded = True
        if message.get("status") != 200 or media not in (b"application/json", b"text/event-stream"):
            await self._send(message)
            return
        if media == b"application/json" and not self._json_allowed:
            await self._send(message)
            return
        if encoded:
            self._mode = "refuse"
            self._start = message
            return
        if media == b"application/json":
            self._mode = "json"
            self._start = message
            return
        self._mode = "sse"
        kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        await self._send({**message, "headers": kept})

    async def _on_body(self, message: Message) -> None:
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self._mode == "pass":
            await self._send(message)
        elif self._mode == "json":
            self._buffer += chunk
            if len(self._buffer) > self._max:
                await self._json_answer(_unfilterable(self._id))
            elif not more:
                await self._json_answer(self._filtered_json(bytes(self._buffer)))
        elif self._mode == "refuse":
            if not more:
                await self._json_answer(_unfilterable(self._id))
        else:
            await self._sse(chunk, more)

    def _filtered_json(self, body: bytes) -> bytes:
        try:
            message = json.loads(body)
        except ValueError:
            return _unfilterable(self._id)
        rewritten = self._rewrite(message)
        if rewritten is message:
            return body
        return json.dumps(rewritten, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    async def _json_answer(self, body: bytes) -> None:
        assert self._start is not None
        headers = [
            (k, v)
            for k, v in self._start.get("headers", [])
            if bytes(k).lower() not in (b"content-length", b"content-encoding", b"content-type")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        self._done = True
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    # SSE: events end at an empty line; lines end at LF (a CR before it is kept with the line).
    async def _sse(self, chunk: bytes, more: bool) -> None:
        self._buffer += chunk
        out = bytearray()
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            line = bytes(self._buffer[: newline + 1])
            del self._buffer[: newline + 1]
            self._event.append(line)
            self._event_size += len(line)
            if line in (b"\n", b"\r\n"):
                out += self._finish_event()
        if self._event_size + len(self._buffer) > self._max:
            out += self._event_bytes(_unfilterable(self._id))
            self._done = True
            await self._send({"type": "http.response.body", "body": bytes(out), "more_body": False})
            return
        if out or not more:
            # An unterminated event at the end is dropped: SSE clients discard it too.
            await self._send({"type": "http.response.body", "body": bytes(out), "more_body": more})

    def _finish_event(self) -> bytes:
        lines, self._event, self._event_size = self._event, [], 0
        data = [line for line in lines if line.startswith(b"data:")]
        raw = b"".join(lines)
        if not data or b'"result"' not in raw:
            return raw
        payload = b"\n".join(_field_value(line) for line in data)
        try:
            message = json.loads(payload)
        except ValueError:
            return raw
        rewritten = self._rewrite(message)
        if rewritten is message:
            return raw
        encoded = json.dumps(rewritten, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        other = b"".join(
            line for line in lines if not line.startswith(b"data:") and line not in (b"\n", b"\r\n")
        )
        return other + self._event_bytes(encoded, terminator=False) + b"\r\n"

    @staticmethod
    def _event_bytes(payload: bytes, *, terminator: bool = True) -> bytes:
        return b"data: " + payload + b"\r\n" + (b"\r\n" if terminator else b"")


def _field_value(line: bytes) -> bytes:
    value = line[5:].rstrip(b"\r\n")
    return value[1:] if value.startswith(b" ") else value


def list_filter_send(
    send: Send,
    http_method: str,
    call: Call | None,
    mandate: Mandate | None,
    policy: ActionPolicy,
    registry: ConstraintRegistry,
    *,
    max_bytes: int,
) -> Send:
    """``send`` wrapped to filter a listing answer to ``mandate``, or ``send`` itself when the request
    cannot be answered with one (a POST of anything but a list call; DELETE)."""
    if http_method == "GET":
        keys = tuple(LIST_RESULT_KEYS.values())

        def by_shape(message: Any) -> Any:
            return filter_listing(message, keys, mandate, policy, registry)

        return _ListFilterSend(send, by_shape, None, max_bytes, json_allowed=False)
    if http_method != "POST" or call is None or call.kind != "request" or call.method not in LIST_RESULT_KEYS:
        return send
    key = (LIST_RESULT_KEYS[call.method],)
    request_id = call.id

    def for_request(message: Any) -> Any:
        return filter_listing(message, key, mandate, policy, registry, request_id=request_id)

    return _ListFilterSend(send, for_request, request_id, max_bytes, json_allowed=True)
