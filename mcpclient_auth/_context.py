"""Per-context state of the request path: every ``ContextVar`` the package uses, in one place.

Three things travel with the *context* of a call rather than with the client that sends it, because
one client may serve several runs and several users:

- **run selection** (:func:`use_run` / :func:`current_run`): which :class:`~mcpclient_auth.run.AgentRun`
  a multi-run client acts for (``run.activate()`` is the same). A client built for one run falls back to
  that run when nothing is selected.
- **acting-for** (:func:`acting_for` / :func:`current_principal`): whom the calls made here are for; a run
  bound to anyone else refuses them (``PrincipalMismatch``).
- **discovery mode** (:func:`discovery_mode` / :func:`discovery_run`): sessions opened inside
  ``run.discovery()`` carry the run's service token and may only list.

(One request's 401/403 state, the auth flow's ``Attempt``, is not context state: it travels in that
request's ``extensions``, see :mod:`mcpclient_auth._hooks.auth`.)

A fourth variable belongs to the token layer, not to the caller: **the loop a sync caller blocks**
(:func:`blocked_loop`). A sync client's token work runs on the private token loop
(:mod:`mcpclient_auth.authz._blocking`) while the calling thread waits; that work carries, in this
variable, the event loop the waiting thread was running (if any), so the token cache never makes it
wait for a request in flight on that very loop (it could never finish: a deadlock).

In mcp 1.x the context must be set when a session is *opened* (its transport tasks copy the context
then): it then applies to every request of that session. mcp 2.x sends every request in the context of
the call that made it.

    with acting_for("alice"), use_run(run_for_alice):
        ...                             # requests through a multi-run client act for alice's run

This module imports nothing from the request path, so everything above it (``run``, ``hooks``,
``hooks.auth``) can import it at top level.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .principal import Principal

if TYPE_CHECKING:
    from .run import AgentRun

__all__ = [
    "acting_for",
    "blocked_loop",
    "current_principal",
    "current_run",
    "discovery_mode",
    "discovery_run",
    "use_run",
]

_CURRENT_RUN: ContextVar[AgentRun | None] = ContextVar("mcpclient_auth_run", default=None)
_ACTING_FOR: ContextVar[str | None] = ContextVar("mcpclient_auth_acting_for", default=None)
_DISCOVERY: ContextVar[AgentRun | None] = ContextVar("mcpclient_auth_discovery", default=None)
#: the event loop (an ``asyncio.AbstractEventLoop``) of a thread that waits for this token work
_BLOCKED_LOOP: ContextVar[Any] = ContextVar("mcpclient_auth_blocked_loop", default=None)


@contextmanager
def _use_run(run: AgentRun) -> Iterator[AgentRun]:
    token = _CURRENT_RUN.set(run)
    try:
        yield run
    finally:
        _CURRENT_RUN.reset(token)


def use_run(run: AgentRun) -> AbstractContextManager[AgentRun]:
    """Select ``run`` for calls made in this context (``with use_run(run): ...``)."""
    return _use_run(run)


def current_run() -> AgentRun | None:
    """The run selected with :func:`use_run` in this context, if any."""
    return _CURRENT_RUN.get()


@contextmanager
def acting_for(principal: Principal | str) -> Iterator[str]:
    """Declare whom the calls made in this context are for; a run bound to anyone else refuses them.

    with acting_for(request_user):          # e.g. from your web framework's auth
        with use_run(run_for[request_user.id]):
            ...                             # a mix-up of runs is refused (PrincipalMismatch)
    """
    principal_id = principal.id if isinstance(principal, Principal) else principal
    if not isinstance(principal_id, str) or not principal_id:
        raise ConfigurationError("acting_for() takes a Principal or a non-empty principal id")
    token = _ACTING_FOR.set(principal_id)
    try:
        yield principal_id
    finally:
        _ACTING_FOR.reset(token)


def current_principal() -> str | None:
    """The principal id declared with :func:`acting_for` in this context, if any."""
    return _ACTING_FOR.get()


@contextmanager
def _discovery_mode(run: AgentRun) -> Iterator[AgentRun]:
    token = _DISCOVERY.set(run)
    try:
        with _use_run(run):
            yield run
    finally:
        _DISCOVERY.reset(token)


def discovery_mode(run: AgentRun) -> AbstractContextManager[AgentRun]:
    """Mark sessions opened in this context as ``run``'s discovery sessions, and select ``run``.

    Use :meth:`AgentRun.discovery`, which also checks that the run has a discovery token source.
    """
    return _discovery_mode(run)


def discovery_run() -> AgentRun | None:
    """The run whose discovery session this context is in (:func:`discovery_mode`), if any."""
    return _DISCOVERY.get()


def blocked_loop() -> Any:
    """The event loop a sync caller blocks while this token work runs for it (``None`` if none)."""
    return _BLOCKED_LOOP.get()


def set_blocked_loop(loop: Any) -> None:
    """Record, in the *current* context, the loop a sync caller blocks. Only for a fresh context
    made for one piece of token work (:func:`mcpclient_auth.authz._blocking.run_blocking` runs this
    inside ``contextvars.copy_context().run``): nothing is reset, the context is thrown away."""
    _BLOCKED_LOOP.set(loop)
