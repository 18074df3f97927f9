"""One request id in flight per MCP session (used by :class:`~.middleware.McpAuthMiddleware`).

The MCP SDK's streamable HTTP transport routes each response to the POST stream registered under the
*string* form of the request's JSON-RPC id. Two requests of one session whose ids read the same
(``7`` and ``"7"``, or a repeated ``7``) race for that stream: a ``tools/list`` answer can arrive on the
stream of a ``tools/call`` — which the list filter (``_listfilter.py``) does not rewrite — and reach
the caller unfiltered. JSON-RPC forbids reusing an id while its request is pending anyway, so such a
request is refused (400 ``request_id_in_flight``) before it reaches the MCP server; the id is free
again once its response has been sent.

    inflight = InFlightIds()
    key = inflight.claim(session_id, call.id)   # None when the id is already pending in the session
    try: ... finally: inflight.release(key)

Memory: one entry per pending request, dropped when it completes.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["InFlightIds"]


class InFlightIds:
    """Pending request ids by MCP session, keyed as the MCP transport keys its streams: ``str(id)``."""

    def __init__(self) -> None:
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def claim(self, session_id: str, request_id: Any) -> tuple[str, str] | None:
        """Mark ``request_id`` pending in ``session_id``; ``None`` if an id reading the same is pending."""
        key = (session_id, str(request_id))
        with self._lock:
            if key in self._pending:
                return None
            self._pending.add(key)
        return key

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._pending.discard(key)

    def watch(self, send: Send, key: tuple[str, str]) -> Send:
        """``send`` that frees ``key`` just *before* the response's last chunk goes out, so a client
        that has read the whole answer may reuse the id at once (``release`` afterwards is harmless)."""

        async def watched(message: Message) -> None:
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                self.release(key)
            await send(message)

        return watched
