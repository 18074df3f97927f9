"""A replay store shared by every worker process: Redis or Valkey, one atomic ``SET NX PX`` per id.

    from mcpclient_auth.replay_redis import RedisReplayStore
    store = RedisReplayStore("redis://cache.internal:6379/0")
    app = mcp.http_app(path="/mcp", middleware=[Middleware(McpAuthMiddleware, trust=trust,
        audience="https://hr.example/mcp", replay_store=store)])

Each id is ``SET <prefix><key thumbprint>:<kind>:<digest> 1 NX PX <ms until it expires>``: the server
stores it only if absent, atomically, so of two workers receiving the same request at the same
moment exactly one gets ``OK``. A request's ids (nonce, ECT ``jti``) go in one pipelined round trip;
an id that was already there is a replay. Redis expires the keys itself.

Clocks: the TTL is computed from the claiming worker's clock, so a worker whose clock runs ``D``
seconds ahead would store ids that expire ``D`` seconds before a correct-clock worker stops accepting
them -- a replay window at that other worker. Every TTL therefore gets ``clock_margin`` seconds more
(default 60, the verifier's default ``skew``): workers whose clocks differ by at most that margin
cannot open such a window. Keep the workers' clocks synchronised (NTP) well within it; set
``clock_margin`` to at least the ``skew`` the verifiers use.

Not a transaction: the pipeline is not ``MULTI``/``EXEC``, so when one id of a batch is refused (a
replay) the others of the batch may have been stored. That only burns them -- a later request
carrying one of them is refused too -- so it fails closed: no id is ever accepted twice.

Fail closed: a refused connection, a timeout (``timeout``, default 250 ms, no retries — a slow
store must not hold requests) or any other Redis error raises
:class:`~mcpclient_auth.errors.ReplayStoreUnavailable` (503 ``replay_store_unavailable``); an
out-of-memory answer raises :class:`~mcpclient_auth.errors.ReplayStoreFull`. Run the server with
``maxmemory-policy noeviction``: an evicting policy would silently forget ids and re-open replays.

``claim`` uses the blocking client (for sync verifiers); ``aclaim`` uses ``redis.asyncio``, one
client per event loop, so the ASGI middleware never blocks its loop on the round trip. Needs the
``redis`` extra (``pip install 'mcpclient-auth[redis]'``); ``redis`` is imported on first use.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ReplayDetected, ReplayStoreFull, ReplayStoreUnavailable
from .replay import ReplayClaim

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["DEFAULT_CLOCK_MARGIN", "DEFAULT_PREFIX", "RedisReplayStore"]

DEFAULT_PREFIX = "mcpclient-auth:replay:"
#: Seconds added to every id's TTL: the verifier's default ``skew``. See the module docstring.
DEFAULT_CLOCK_MARGIN = 60.0
_REPLAY_MESSAGES = {
    "nonce": "this signature nonce was already used",
    "ect": "this token id was already used within its validity window",
}


def _redis_module() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            "RedisReplayStore needs the redis client: install mcpclient-auth[redis]"
        ) from None
    return redis


class RedisReplayStore:
    """Replay ids in Redis/Valkey, shared by all workers; see the module docstring.

    Give a ``url`` (``redis://``, ``rediss://``, ``unix://``), or ready clients: ``client`` (a
    ``redis.Redis``) for :meth:`claim` and ``async_client`` (a ``redis.asyncio.Redis``) for
    :meth:`aclaim` — e.g. for Sentinel, Cluster or custom TLS. Clients built from the URL use
    ``timeout`` for connecting and for each answer and never retry.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 0.25,
        clock_margin: float = DEFAULT_CLOCK_MARGIN,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ConfigurationError("RedisReplayStore needs a url or a client")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        if not clock_margin >= 0:
            raise ConfigurationError("clock_margin must be a non-negative number of seconds")
        self.prefix = prefix
        self.timeout = timeout
        self.clock_margin = float(clock_margin)
        self._url = url
        self._client = client
        self._async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # The URL may hold a password: never shown.
        return (
            f"RedisReplayStore(prefix={self.prefix!r}, timeout={self.timeout}, "
            f"clock_margin={self.clock_margin:g})"
        )

    # the protocol ----------------------------------------------------------------------------------

    def claim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None:
        live, commands = self._commands(claims, now)
        if not live:
            return
        redis = _redis_module()
        try:
            pipe = self._sync_client().pipeline(transaction=False)
            for key, ttl_ms in commands:
                pipe.set(key, b"1", nx=True, px=ttl_ms)
            results = pipe.execute()
        except redis.RedisError as exc:
            raise self._failure(redis, exc) from None
        self._check(live, results)

    async def aclaim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None:
        live, commands = self._commands(claims, now)
        if not live:
            return
        redis = _redis_module()
        try:
            pipe = self._loop_client().pipeline(transaction=False)
            for key, ttl_ms in commands:
                pipe.set(key, b"1", nx=True, px=ttl_ms)
            # The socket timeout bounds each read; this bounds the whole exchange (connect included)
            # without wait_for's extra task per call.
            async with asyncio.timeout(self.timeout * 4):
                results = await pipe.execute()
        except (redis.RedisError, TimeoutError, OSError) as exc:
            raise self._failure(redis, exc) from None
        self._check(live, results)

    # housekeeping ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the blocking client built from the URL (a client passed in stays the caller's)."""
        with self._lock:
            client, self._client = (self._client, None) if self._url is not None else (None, self._client)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's client built from the URL."""
        if self._url is None:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    # internals ---------------------------------------------------------------------------------------

    def _commands(
        self, claims: Sequence[ReplayClaim], now: float | None
    ) -> tuple[list[ReplayClaim], list[tuple[str, int]]]:
        # Expiry by the latest clock in the fleet we tolerate, not only ours (module docstring).
        current = (time.time() if now is None else now) - self.clock_margin
        live = [c for c in claims if c.expires_at > current]
        commands = [
            (f"{self.prefix}{c.partition}:{c.key}", max(1, math.ceil((c.expires_at - current) * 1000)))
            for c in live
        ]
        return live, commands

    @staticmethod
    def _check(live: list[ReplayClaim], results: list[Any]) -> None:
        # SET NX answers OK (True) when it stored the key and nil (None) when the key existed.
        for claim, stored in zip(live, results, strict=True):
            if not stored:
                message = _REPLAY_MESSAGES.get(claim.kind, "this id was already used")
                raise ReplayDetected(message, kind=claim.kind)

    def _failure(self, redis: Any, exc: BaseException) -> ReplayStoreFull | ReplayStoreUnavailable:
        # Messages name the failure class only: a connection error's text can carry the URL.
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return ReplayStoreFull("the shared replay store is out of memory", retry_after=1)
        return ReplayStoreUnavailable(
            f"the shared replay store did not answer ({type(exc).__name__}); refusing to accept "
            "requests whose replay cannot be checked",
            retry_after=1,
        )

    def _client_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "health_check_interval": 0,
        }

    def _sync_client(self) -> redis.Redis:
        if self._client is not None:
            return self._client
        if self._url is None:
            raise ConfigurationError("this RedisReplayStore has only an async client; use aclaim")
        redis = _redis_module()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url, retry=Retry(NoBackoff(), 0), **self._client_options()
                )
            return self._client

    def _loop_client(self) -> redis.asyncio.Redis:
        if self._async_client is not None:
            return self._async_client
        if self._url is None:
            raise ConfigurationError("this RedisReplayStore has only a blocking client; use claim")
        # redis.asyncio connections belong to the loop that opened them: one client per loop.
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            _redis_module()
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            with self._lock:
                client = self._async_clients.get(loop)
                if client is None:
                    client = redis.asyncio.Redis.from_url(
                        self._url, retry=Retry(NoBackoff(), 0), **self._client_options()
                    )
                    self._async_clients[loop] = client
        return client
