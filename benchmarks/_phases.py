"""Per-phase CPU accounting for the split-process benchmark (target 16): profiling mode only.

    clock = PhaseClock()
    clock.wrap(RequestVerifier, "verify", "signature")
    ...                                   # run calls
    clock.snapshot()                      # {"signature": (total_ns, calls), ...}

Each wrapped function adds the CPU time of its thread (``time.thread_time_ns``) spent inside it to
its phase, *exclusive* of nested wrapped functions (a ledger append inside the request hook counts
as ledger, not as hook). Coroutines and async generators are timed per step (between suspensions is
all one step when nothing really suspends, which is what the c=1 profile pass relies on: the body
is in memory, no token source, the replay store in memory). The wrappers are installed only in the
profile pass, never on the measured rounds, so they cost nothing there.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from typing import Any

__all__ = ["WAITING", "PhaseClock", "install_client_phases", "install_server_phases"]

#: The phase of time a timed coroutine spent suspended (other work of the loop): never reported.
WAITING = "(waiting)"


class PhaseClock:
    """Accumulates exclusive thread-CPU nanoseconds per phase name."""

    def __init__(self, now: Callable[[], int] = time.thread_time_ns) -> None:
        self._now = now
        self.totals: dict[str, int] = defaultdict(int)
        self.counts: dict[str, int] = defaultdict(int)
        self._stack: list[list[int]] = []  # [start, nested time] per open frame
        self._restore: list[tuple[Any, str, Any]] = []

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """``{phase: (exclusive ns, calls)}``; :data:`WAITING` (time spent suspended) left out."""
        return {phase: (self.totals[phase], self.counts[phase]) for phase in self.totals if phase != WAITING}

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()

    def _enter(self) -> list[int]:
        frame = [self._now(), 0]
        self._stack.append(frame)
        return frame

    def _exit(self, frame: list[int], phase: str, *, count: bool = True) -> None:
        elapsed = self._now() - frame[0]
        if self._stack and self._stack[-1] is frame:
            self._stack.pop()
        elif frame in self._stack:  # interleaved by a suspension: drop the frames above it
            del self._stack[self._stack.index(frame) :]
        self.totals[phase] += elapsed - frame[1]
        if count:
            self.counts[phase] += 1
        if self._stack:
            self._stack[-1][1] += elapsed

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        """Replace ``owner.name`` (a function, method, staticmethod or async generator) by a timed one."""
        raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        self._restore.append((owner, name, raw))
        wrapper_kind: Callable[[Any], Any] | None = None
        function = raw
        if isinstance(raw, staticmethod):
            function, wrapper_kind = raw.__func__, staticmethod
        elif isinstance(raw, classmethod):
            function, wrapper_kind = raw.__func__, classmethod
        timed = self._timed(function, phase)
        setattr(owner, name, wrapper_kind(timed) if wrapper_kind is not None else timed)

    def unwrap_all(self) -> None:
        for owner, name, raw in reversed(self._restore):
            setattr(owner, name, raw)
        self._restore.clear()

    def _timed(self, function: Any, phase: str) -> Any:
        clock = self
        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def timed_gen(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
                inner = function(*args, **kwargs)
                first, sent, thrown = True, None, None
                try:
                    while True:
                        frame = clock._enter()
                        try:
                            if thrown is not None:
                                item = await inner.athrow(thrown)
                            else:
                                item = await inner.asend(sent) if not first else await inner.__anext__()
                        except StopAsyncIteration:
                            return
                        finally:
                            clock._exit(frame, phase, count=first)
                        first, thrown, sent = False, None, None
                        try:
                            sent = yield item
                        except GeneratorExit:
                            raise
                        except BaseException as exc:  # passed on into the timed generator
                            thrown = exc
                finally:
                    await inner.aclose()

            return timed_gen
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                frame = clock._enter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    clock._exit(frame, phase)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = clock._enter()
            try:
                return function(*args, **kwargs)
            finally:
                clock._exit(frame, phase)

        return timed


def install_client_phases(clock: PhaseClock) -> None:
    """The client's phases: request hook (ECT mint and RFC 9421 signing apart), 401/403 auth flow,
    response path (stream hashing, SSE watcher, outcome), ledger appends."""
    from mcpclient_auth._hooks import RunHooks
    from mcpclient_auth._hooks.auth import AuthFlow
    from mcpclient_auth._hooks.streams import ResponseTracker
    from mcpclient_auth.ect import ExecutionContextToken
    from mcpclient_auth.httpsig import RequestSigner
    from mcpclient_auth.ledger.writer import Ledger

    clock.wrap(RunHooks, "on_request", "request hook (other)")
    clock.wrap(ExecutionContextToken, "mint", "request hook: ECT mint")
    clock.wrap(RequestSigner, "sign", "request hook: RFC 9421 sign")
    clock.wrap(AuthFlow, "async_auth_flow", "auth flow")
    clock.wrap(RunHooks, "on_response", "response path")
    for name in ("feed", "on_eof", "on_close", "on_error", "eof", "closed", "failed"):
        if name in ResponseTracker.__dict__:  # the event names changed once; time whichever exist
            clock.wrap(ResponseTracker, name, "response path")
    clock.wrap(Ledger, "append", "ledger")
    if "append_fresh" in Ledger.__dict__:  # the journal's two lines per call (issue #16, round 4)
        clock.wrap(Ledger, "append_fresh", "ledger")
    _wrap_raw_crypto(clock, "sign")


def _wrap_raw_crypto(clock: PhaseClock, operation: str) -> None:
    """Time the raw ES256 operation as a phase of its own, so the phases that contain it show their
    Python work apart, and its in-situ cost can be checked against the cold floor measured beside it.
    Signing: ``Identity.sign`` (the key's bound ``cryptography`` sign and the r||s conversion, nothing
    else); verifying: the ES256 algorithm's ``verify``."""
    from mcpclient_auth.keys import ALGORITHMS, Identity

    if operation == "sign":
        clock.wrap(Identity, "sign", "crypto: raw ES256 sign (in situ)")
        return
    algorithm = type(ALGORITHMS["ES256"])
    clock.wrap(algorithm, operation, f"crypto: raw ES256 {operation} (in situ)")


def install_server_phases(clock: PhaseClock) -> None:
    """The server's phases: pre-checks, body buffering, signature, tokens (mandate, ECT), JSON-RPC
    and policy, replay (claim, budget, DAG), ledger."""
    from mcpclient_auth.httpsig import RequestVerifier
    from mcpclient_auth.server import _limits, middleware, verify
    from mcpclient_auth.server._audit import ServerAudit

    clock.wrap(verify.IncomingHeaders, "__init__", "pre-checks")
    clock.wrap(_limits.PreAuthGate, "check", "pre-checks")  # the middleware calls check (screen wraps it)
    clock.wrap(middleware.McpAuthMiddleware, "_url", "pre-checks")
    clock.wrap(middleware.McpAuthMiddleware, "_protected", "pre-checks")
    read_body = _limits.PreAuthGate.read_body

    async def read_body_not_waiting(self: Any, receive: Any, *args: Any) -> Any:
        # Time awaiting the ASGI ``receive`` is the loop serving others: not body buffering.
        async def timed_receive() -> Any:
            frame = clock._enter()
            try:
                return await receive()
            finally:
                clock._exit(frame, WAITING)

        return await read_body(self, timed_receive, *args)

    setattr(_limits.PreAuthGate, "read_body", read_body_not_waiting)  # noqa: B010
    clock._restore.append((_limits.PreAuthGate, "read_body", read_body))
    clock.wrap(_limits.PreAuthGate, "read_body", "body buffering")
    clock.wrap(RequestVerifier, "verify", "signature")
    clock.wrap(verify.McpRequestVerifier, "_mandate", "tokens: mandate")
    clock.wrap(verify.McpRequestVerifier, "_ect", "tokens: ECT")
    clock.wrap(verify.McpRequestVerifier, "check_unclaimed", "JSON-RPC, policy, binding")
    clock.wrap(verify.McpRequestVerifier, "acommit", "replay, budget, DAG")
    clock.wrap(ServerAudit, "append", "ledger")
    clock.wrap(ServerAudit, "mandate", "ledger")
    _wrap_raw_crypto(clock, "verify")
