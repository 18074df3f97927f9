"""Token work for synchronous clients: one private event loop on a daemon thread.

Token sources are async (their HTTP clients, their single-flight cache, a shared Redis store). A sync
``httpx.Client`` / ``httpx2.Client`` of a run with a token source needs their answer inside a plain
function call, and there is no sound way to run a coroutine there in the caller's thread: the thread
may already be running an event loop (``asyncio.run`` would fail; a nested loop would deadlock on
anything bound to the outer one). So the work goes to **one process-wide token loop** on its own
thread, and the caller waits for it, bounded:

    token = run_blocking(lambda: source.get_token(principal, audience, scopes), timeout=60)

Why one loop for the process (not one per run or per call): sources are shared between runs, and
their cache joins concurrent misses for one key into one request. Every sync caller's misses meet on
this loop; async callers on their own loops join a request in flight here (the token loop is never
blocked by user code, so waiting for it is safe), and a request in flight on a caller's loop is joined
from here unless that loop's thread is itself waiting in :func:`run_blocking` (:func:`is_blocked`;
that request could never finish while its thread waits — and two threads each waiting for the
other's loop through the token loop would wait for each other until the timeout). See
:class:`~.cache.TokenCache`.

Fail closed: a timeout cancels the work and raises
:class:`~mcpclient_auth.errors.TokenExchangeUnavailable`; the caller gets no token, never a stale one.
A call from the token loop's own thread is refused (it would wait for itself). After ``fork()`` the
child starts its own loop on first use (threads do not survive a fork).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._context import set_blocked_loop
from ..errors import ConfigurationError, TokenExchangeUnavailable

__all__ = ["DEFAULT_BLOCKING_TIMEOUT", "is_blocked", "run_blocking", "token_loop"]

T = TypeVar("T")

#: Seconds a sync caller waits for token work (discovery, a token request with its retries).
DEFAULT_BLOCKING_TIMEOUT = 120.0


class _LoopThread:
    """An event loop running forever on a daemon thread (created by :func:`token_loop`)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="mcpclient-auth-token-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_lock = threading.Lock()
_current: _LoopThread | None = None
#: Event loops whose thread is waiting in :func:`run_blocking` right now (with how many waits: a
#: thread waits once at a time, but the count keeps this right whatever calls it).
_blocked: dict[asyncio.AbstractEventLoop, int] = {}
_blocked_lock = threading.Lock()


def is_blocked(loop: asyncio.AbstractEventLoop) -> bool:
    """True while ``loop``'s thread waits in :func:`run_blocking`: nothing on it can progress, so no
    token work may wait for a request in flight there (process-wide, whichever thread asks)."""
    return loop in _blocked


def _block(loop: asyncio.AbstractEventLoop) -> None:
    with _blocked_lock:
        _blocked[loop] = _blocked.get(loop, 0) + 1


def _unblock(loop: asyncio.AbstractEventLoop) -> None:
    with _blocked_lock:
        left = _blocked.get(loop, 0) - 1
        if left > 0:
            _blocked[loop] = left
        else:
            _blocked.pop(loop, None)


def _loop_thread() -> _LoopThread:
    global _current
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = _LoopThread()
        return _current


def token_loop() -> asyncio.AbstractEventLoop:
    """The process's token loop (started on first use)."""
    return _loop_thread().loop


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_blocking(make: Callable[[], Awaitable[T]], *, timeout: float = DEFAULT_BLOCKING_TIMEOUT) -> T:
    """Run ``make()`` on the token loop and wait (at most ``timeout`` seconds) for its result.

    The work runs in a copy of the caller's context (``contextvars``), with
    :func:`~mcpclient_auth._context.blocked_loop` set to the event loop this thread is running, if
    any. Exceptions of the work are re-raised here; a timeout cancels it and raises
    :class:`~mcpclient_auth.errors.TokenExchangeUnavailable` (``retryable``).
    """
    owner = _loop_thread()
    if threading.current_thread() is owner.thread:
        raise ConfigurationError("token work cannot wait for itself on the token loop")
    calling = _calling_loop()
    context = contextvars.copy_context()
    context.run(set_blocked_loop, calling)
    result: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Future[T]] = []

    def start() -> None:  # on the token loop, inside ``context``
        if not result.set_running_or_notify_cancel():
            return
        try:
            task = asyncio.ensure_future(make())
        except BaseException as exc:
            result.set_exception(exc)
            return
        tasks.append(task)
        task.add_done_callback(_copy_outcome(result))

    # Marked blocked before the work is scheduled: the work's join decisions already see it.
    if calling is not None:
        _block(calling)
    try:
        owner.loop.call_soon_threadsafe(start, context=context)
        return result.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        owner.loop.call_soon_threadsafe(_cancel_all, tasks)
        raise TokenExchangeUnavailable(
            f"the token source did not answer within {timeout:g} s (sync client)", timeout=timeout
        ) from None
    finally:
        if calling is not None:
            _unblock(calling)


def _copy_outcome(result: concurrent.futures.Future[T]) -> Callable[[asyncio.Future[T]], None]:
    def copy(task: asyncio.Future[T]) -> None:
        if task.cancelled():
            result.set_exception(
                TokenExchangeUnavailable("the token work was cancelled (sync client)", retryable=True)
            )
            return
        exc = task.exception()
        if exc is not None:
            result.set_exception(exc)
        else:
            result.set_result(task.result())

    return copy


def _cancel_all(tasks: list[asyncio.Future[T]]) -> None:
    for task in tasks:
        task.cancel()
