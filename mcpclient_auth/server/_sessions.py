"""MCP sessions bound to whoever opened them (used by :class:`~.middleware.McpAuthMiddleware`).

Streamable HTTP names a session with the ``mcp-session-id`` the server returns on the ``initialize``
response; every later POST, the SSE ``GET`` and the closing ``DELETE`` carry it. Without a binding,
another agent with its own valid mandate that learns a session id could post into the session, read
its stream or delete it. So the middleware remembers, per session id, the caller that opened it —
the principal (the mandate chain's root ``iss``), mandate ``sub`` and the agent key (its thumbprint)
that signed the request — and refuses
any request on that id from anyone else (403 ``session_not_yours``). A session id it holds no owner
for (never opened through it, or the binding expired) is answered 404 ``session_unknown``, which MCP
clients take as "start a new session" (MCP Streamable HTTP, session management).

    sessions = SessionBindings()
    refusal = sessions.admit(session_id, caller)     # None, SessionNotYours or SessionUnknown
    send = sessions.watch(send, "POST", session_id, caller)   # binds the id the response returns

Memory is bounded: at most ``max_sessions`` bindings (least recently used dropped first) and a
binding idle for ``idle_timeout`` seconds expires; both make the session unknown (404), never open.
Bindings live in the process: MCP sessions of a stateful server live in one process too, so run
several workers with sticky routing on ``mcp-session-id`` (which stateful MCP servers need anyway).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..errors import SessionError, SessionNotYours, SessionUnknown
from .verify import VerifiedRequest

__all__ = ["SESSION_HEADER", "Caller", "SessionBindings"]

SESSION_HEADER = "mcp-session-id"
_SESSION_HEADER_BYTES = SESSION_HEADER.encode("ascii")
_MAX_SESSION_ID = 256

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a verified request: the principal (the mandate chain's root ``iss`` — a sub-mandate's
    own ``iss`` is only the delegating agent, so binding by it would let another user's delegation
    from the same agent into the session), the mandate's ``sub``, and the signing agent key's
    RFC 7638 thumbprint (the key itself, whatever ``kid`` it is registered under)."""

    principal: str | None
    sub: str | None
    agent_key: str

    @classmethod
    def of(cls, verified: VerifiedRequest) -> Caller:
        mandate = verified.mandate
        return cls(
            principal=mandate.principal if mandate is not None else None,
            sub=mandate.sub if mandate is not None else None,
            agent_key=verified.signature.key.thumbprint,
        )


class SessionBindings:
    """Session id -> the :class:`Caller` that opened it (module docstring)."""

    def __init__(
        self,
        *,
        max_sessions: int = 100_000,
        idle_timeout: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1 or idle_timeout <= 0:
            raise ValueError("max_sessions and idle_timeout must be positive")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._owners: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, session_id: str) -> Caller | None:
        """The caller that opened ``session_id`` (``None`` if unknown or expired)."""
        now = self._clock()
        with self._lock:
            entry = self._owners.get(session_id)
            if entry is None:
                return None
            if now - entry[1] > self.idle_timeout:
                del self._owners[session_id]
                return None
            return entry[0]

    def admit(self, session_id: str | None, caller: Caller) -> SessionError | None:
        """``None`` when ``caller`` may use ``session_id`` (or names none); else the refusal."""
        if session_id is None:
            return None
        owner = self.owner(session_id)
        if owner is None:
            return SessionUnknown("this MCP session is unknown or has expired; start a new session")
        if owner != caller:
            return SessionNotYours("this MCP session was opened by another caller")
        self._touch(session_id, caller)
        return None

    def bind(self, session_id: str, caller: Caller) -> None:
        """Record ``caller`` as the owner of a session the server just opened (first owner wins)."""
        if not session_id or len(session_id) > _MAX_SESSION_ID:
            return
        now = self._clock()
        with self._lock:
            entry = self._owners.get(session_id)
            if entry is not None and now - entry[1] <= self.idle_timeout and entry[0] != caller:
                return  # never hand an existing session to someone else
            self._owners[session_id] = (caller, now)
            self._owners.move_to_end(session_id)
            while len(self._owners) > self.max_sessions:
                self._owners.popitem(last=False)

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._owners.pop(session_id, None)

    def _touch(self, session_id: str, caller: Caller) -> None:
        with self._lock:
            if session_id in self._owners:
                self._owners[session_id] = (caller, self._clock())
                self._owners.move_to_end(session_id)

    def watch(self, send: Send, method: str, session_id: str | None, caller: Caller) -> Send:
        """Wrap ``send``: a response that returns a new ``mcp-session-id`` binds it to ``caller``; a
        successful ``DELETE`` of the session drops its binding (:meth:`response_started`)."""

        async def watched(message: Message) -> None:
            if message.get("type") == "http.response.start":
                self.response_started(message, method, session_id, caller)
            await send(message)

        return watched

    def response_started(
        self, message: Message, method: str, session_id: str | None, caller: Caller
    ) -> None:
        """What :meth:`watch` does with the ``http.response.start`` message of a request by ``caller``
        (for a caller that watches ``send`` itself, as the middleware does in one wrapper)."""
        status = int(message.get("status", 0))
        returned = _header(message.get("headers") or [])
        if session_id is None and returned is not None and 200 <= status < 300:
            self.bind(returned, caller)
        elif method == "DELETE" and session_id is not None and 200 <= status < 300:
            self.forget(session_id)


def _header(headers: Any) -> str | None:
    for name, value in headers:
        if bytes(name).lower() == _SESSION_HEADER_BYTES:
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None
