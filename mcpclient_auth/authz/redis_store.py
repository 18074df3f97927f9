"""A token store in Redis/Valkey shared by agent worker processes (install ``mcpclient-auth[redis]``).

    key = load_from_your_secret_manager()            # 32 random bytes; generate_encryption_key() makes one
    store = RedisTokenStore("redis://127.0.0.1:6379/0", encryption_key=key)
    source = TokenExchange(url, client_id="agent", client_secret=secret,
                           cache=TokenCache(store=store))       # the same CacheKey as in-process
    ...
    await store.aclose()

What Redis holds, per :class:`~mcpclient_auth.authz.cache.CacheKey`:

- ``<prefix>{<hmac>}:token`` -- the token, AES-256-GCM encrypted with a random 96-bit nonce per write;
  the canonical cache key is the associated data, so a ciphertext moved under another key name does
  not decrypt. Its Redis TTL is the token's freshness (``expires_at - skew``).
- ``<prefix>{<hmac>}:lease`` -- while one worker fetches: a random id, ``SET NX PX``, renewed by that
  worker while its request runs. Everyone else polls (bounded) for the token; when the lease vanishes
  without a token (the holder died and its lease expired) the next worker takes it. A holder whose
  event loop is blocked for longer than ``lease_ttl`` cannot renew and counts as dead: another worker
  may then fetch in parallel, and the late holder's token is not written (only a lease holder
  writes), so it never overwrites the newer one.
- ``<prefix>{<hmac>}:failed`` -- when the holder's request failed with a typed authorization error:
  that error (encrypted like a token) with the holder's lease id, for ``lease_ttl``. Workers that
  were waiting on *that* lease raise the same error, as waiters of one in-process flight do; anyone
  arriving later ignores it and tries again (failures are never cached).

``<hmac>`` is HMAC-SHA-256 of the canonical cache key under a key derived from the encryption key, so
key names reveal no principal id, subject digest, audience or endpoint, and a worker with another
encryption key sees nothing (a miss: it never reads, and cannot decrypt, someone else's entries). Both
keys are derived with HKDF-SHA-256 from the user's 32-byte key; the key itself is kept by no object.

**When Redis fails** (connection refused or lost, timeout, any Redis error before a token was
obtained), :class:`~mcpclient_auth.errors.TokenStoreUnavailable` is raised and the token endpoint is
*not* asked instead: fail closed. Tokens the worker already holds in its in-process layer keep being
served until their own expiry (they are neither stale nor foreign). The alternative -- every worker
fetching for itself -- is exactly the storm the store exists to prevent, and where refresh tokens
rotate, two parallel refreshes make the IdP see a reused refresh token and revoke the user's grant.
``on_unavailable="fetch"`` opts into the fallback (own fetch, cached in-process only) for grants where
that cannot happen (client credentials, token exchange with an IdP that can take the load).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import errors
from ..errors import AuthorizationError, ConfigurationError, TokenStoreTimeout, TokenStoreUnavailable
from .base import AccessToken
from .cache import ANY_TOKEN, CacheKey, TokenFactory

if TYPE_CHECKING:  # redis is an optional extra, imported when the store first connects
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_PREFIX",
    "DEFAULT_WAIT_TIMEOUT",
    "RedisTokenStore",
    "generate_encryption_key",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "mcpclient-auth:token:"
#: The fetch lease lives this long without renewal: how fast a dead holder is noticed.
DEFAULT_LEASE_TTL = 5.0
#: How long a worker waits for another worker's fetch before giving up with TokenStoreTimeout. Longer
#: than one token request with its retry (2 x 10 s + back-off), so a live holder always finishes first.
DEFAULT_WAIT_TIMEOUT = 30.0

_KEY_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = b"\x01"  # value = format byte || nonce || AES-GCM(ciphertext || tag)
_AAD_LABEL = b"mcpclient-auth token-store v1\n"
_FAILURE_AAD_LABEL = b"mcpclient-auth token-store v1 failure\n"
_POLL_FIRST, _POLL_MAX = 0.01, 0.1

# Compare-and-delete and compare-and-renew: only the holder's own lease id may end or extend it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
# Store the token (TTL = its freshness) and end our lease in one round trip -- only while the lease is
# still ours: a holder that lost it (its loop stalled past lease_ttl) is a dead holder, and its late
# write must not overwrite what the worker that took over stored.
_STORE_AND_RELEASE = (
    "if redis.call('get', KEYS[2]) ~= ARGV[3] then return 0 end "
    "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) redis.call('del', KEYS[2]) return 1"
)

_T = TypeVar("_T")


def generate_encryption_key() -> bytes:
    """32 random bytes for :class:`RedisTokenStore` (keep them in your secret manager, not in code)."""
    return os.urandom(_KEY_BYTES)


def _derive(key: bytes, label: bytes, length: int = _KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(key)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical_key(key: CacheKey) -> bytes:
    """The cache key as deterministic bytes (JSON array in field order): HMAC input and GCM AAD."""
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode("ascii")


class _Down(Exception):
    """Redis failed; carries nothing but the failing operation's name."""


class RedisTokenStore:
    """A :class:`~mcpclient_auth.authz.cache.TokenStore` in Redis/Valkey; see the module docstring.

    ``url`` (``redis://``, ``rediss://``, ``unix://``) or ``client`` (a ``redis.asyncio.Redis`` with
    ``decode_responses=False``, left open on :meth:`aclose`). ``encryption_key``: 32 bytes.
    ``lease_ttl``: seconds a fetch lease lives without renewal. ``wait_timeout``: the bound on waiting
    for another worker's fetch. ``socket_timeout``: per Redis command (for a store built from ``url``).
    ``on_unavailable``: ``"raise"`` (fail closed, the default) or ``"fetch"`` (see the module docstring).
    ``clock``: epoch seconds, the same clock as the :class:`TokenCache` in front (tests inject one).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        encryption_key: bytes,
        client: Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        socket_timeout: float = 2.0,
        on_unavailable: Literal["raise", "fetch"] = "raise",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisTokenStore needs exactly one of url= or client=")
        if not isinstance(encryption_key, bytes | bytearray) or len(encryption_key) != _KEY_BYTES:
            raise ConfigurationError(
                "the token store encryption_key must be 32 random bytes (AES-256); "
                "see generate_encryption_key()"
            )
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} \r\n"):
            raise ConfigurationError("prefix must be a non-empty string without braces or whitespace")
        if lease_ttl <= 0 or wait_timeout <= 0 or socket_timeout <= 0:
            raise ConfigurationError("lease_ttl, wait_timeout and socket_timeout must be positive")
        if on_unavailable not in ("raise", "fetch"):
            raise ConfigurationError('on_unavailable must be "raise" or "fetch"')
        pool = getattr(client, "connection_pool", None)
        if pool is not None and getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ConfigurationError("the Redis client must use decode_responses=False (values are binary)")
        master = bytes(encryption_key)
        self._aead = AESGCM(_derive(master, b"mcpclient-auth token-store v1 encryption"))
        self._name_key = _derive(master, b"mcpclient-auth token-store v1 key names")
        #: A one-way id of the encryption key, safe to log: tells two workers' keys apart.
        self.key_id = _derive(master, b"mcpclient-auth token-store v1 key id", 6).hex()
        self.prefix = prefix
        self.lease_ttl = float(lease_ttl)
        self.wait_timeout = float(wait_timeout)
        self.on_unavailable = on_unavailable
        self._url = url
        self._now = clock  # epoch seconds; the TokenCache in front must use the same clock
        self._socket_timeout = float(socket_timeout)
        self._client_given = client
        self._own: Redis | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)

    # --- TokenStore -------------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    async def fetch(
        self,
        key: CacheKey,
        factory: TokenFactory,
        *,
        fresh_until: Callable[[AccessToken], float],
        stale: str | None = None,
    ) -> tuple[AccessToken, float]:
        """The fleet's token for ``key``, or one fetched by exactly one worker at a time."""
        try:
            return await self._fetch(key, factory, fresh_until, stale)
        except _Down as down:
            if self.on_unavailable == "fetch":
                log.warning("token store unavailable (%s); fetching without it, as configured", down)
                token = await factory()
                return token, fresh_until(token)
            raise TokenStoreUnavailable(
                f"the shared token store failed ({down}); no token was fetched in its place",
                store_key_id=self.key_id,
            ) from None

    async def aclose(self) -> None:
        """Close the connection pool this store opened (a ``client`` passed in is left open)."""
        client, self._own = self._own, None
        if client is not None and self._own_loop is asyncio.get_running_loop():
            await client.aclose()

    # --- the protocol in Redis --------------------------------------------------------------------

    async def _fetch(
        self,
        key: CacheKey,
        factory: TokenFactory,
        fresh_until: Callable[[AccessToken], float],
        stale: str | None,
    ) -> tuple[AccessToken, float]:
        redis = self._client()
        canonical = canonical_key(key)
        entry_name, lease_name, failed_name = self._names(canonical)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        pause = _POLL_FIRST
        waited_on: set[bytes] = set()  # lease ids of the fetches this call waited for
        while True:
            raw, holder, failed, ttl_ms = await self._read(redis, entry_name, lease_name, failed_name)
            found = self._open(raw, canonical, stale, ttl_ms)
            if found is not None:
                return found
            if holder is None:
                if waited_on and failed is not None:
                    self._raise_shared_failure(failed, canonical, waited_on)
                lease_id = secrets.token_hex(16)
                taken = await self._call("lease", redis.set(lease_name, lease_id, nx=True, px=self._lease_ms))
                if taken:
                    names = (entry_name, lease_name, failed_name)
                    return await self._fetch_holding(
                        redis, canonical, names, lease_id, factory, fresh_until, stale
                    )
                # Another worker took it first: wait for it like everyone else (bounded below).
            elif isinstance(holder, bytes):
                waited_on.add(holder)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TokenStoreTimeout(
                    f"another worker held the token fetch lease for more than {self.wait_timeout:g} s",
                    store_key_id=self.key_id,
                )
            # Polling, not pub/sub: one GET per interval from one task per process and key, no extra
            # connection, and a dead holder is noticed the same way as a finished one.
            await asyncio.sleep(min(pause * (0.5 + secrets.randbelow(1000) / 1000), remaining))
            pause = min(pause * 2, _POLL_MAX)

    async def _fetch_holding(
        self,
        redis: Redis,
        canonical: bytes,
        names: tuple[str, str, str],
        lease_id: str,
        factory: TokenFactory,
        fresh_until: Callable[[AccessToken], float],
        stale: str | None,
    ) -> tuple[AccessToken, float]:
        entry_name, lease_name, failed_name = names
        renewing = asyncio.get_running_loop().create_task(self._renew(redis, lease_name, lease_id))
        released = False
        try:
            # Someone may have stored the token between our read and our lease.
            raw, _, _, ttl_ms = await self._read(redis, entry_name)
            found = self._open(raw, canonical, stale, ttl_ms)
            if found is not None:
                return found
            if raw is not None:  # stale, undecryptable or expired by our clock: nobody may use it
                await self._call("delete", redis.eval(_RELEASE, 1, entry_name, raw))
            try:
                token = await factory()
            except AuthorizationError as exc:
                renewing.cancel()
                # Tell the workers waiting on this lease, so that they do not each try again now.
                value = self._seal_failure(exc, lease_id, canonical)
                keys_and_args = (failed_name, lease_name, value, self._lease_ms, lease_id)
                with contextlib.suppress(_Down):
                    await self._call("write", redis.eval(_STORE_AND_RELEASE, 2, *keys_and_args))
                    released = True  # or lost: either way nothing of ours to release
                raise
            until = fresh_until(token)
            renewing.cancel()
            ttl_ms = int((until - self._now()) * 1000)
            try:
                if ttl_ms > 0:
                    value = self._seal(token, until, canonical)
                    keys_and_args = (entry_name, lease_name, value, ttl_ms, lease_id)
                    if not await self._call("write", redis.eval(_STORE_AND_RELEASE, 2, *keys_and_args)):
                        # Our lease expired under a stall and another worker took over: its token
                        # stands; ours is still valid and goes to our own callers only.
                        log.warning("token store: lease lost while fetching; the token was not shared")
                    released = True
            except _Down as down:
                # The token is fresh and ours; only sharing it failed. Hand it out, do not raise.
                log.warning("token store: could not share a fetched token (%s)", down)
            return token, until
        finally:
            renewing.cancel()
            if not released:
                # On failure the lease expires by itself within lease_ttl.
                with contextlib.suppress(_Down):
                    await self._call("release", redis.eval(_RELEASE, 1, lease_name, lease_id))

    async def _renew(self, redis: Redis, lease_name: str, lease_id: str) -> None:
        # While our request runs, keep the lease alive; if this process dies, renewals stop and the
        # lease expires within lease_ttl, so a waiting worker takes over.
        interval = self.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._call("renew", redis.eval(_RENEW, 1, lease_name, lease_id, self._lease_ms)):
                    return  # lost (expired under a stall): whoever holds it now is in charge
            except _Down:
                return

    # --- entries ----------------------------------------------------------------------------------

    def _names(self, canonical: bytes) -> tuple[str, str, str]:
        digest = _b64url(hmac.new(self._name_key, canonical, hashlib.sha256).digest())
        # {digest} is a Redis Cluster hash tag: entry, lease and failure land in the same slot.
        base = f"{self.prefix}{{{digest}}}"
        return f"{base}:token", f"{base}:lease", f"{base}:failed"

    def _seal_failure(self, exc: AuthorizationError, lease_id: str, canonical: bytes) -> bytes:
        document = {"lease": lease_id, "class": type(exc).__name__, "error": exc.to_dict()}
        plaintext = json.dumps(document, separators=(",", ":")).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, _FAILURE_AAD_LABEL + canonical)

    def _raise_shared_failure(self, raw: object, canonical: bytes, waited_on: set[bytes]) -> None:
        """Raise the failure of a fetch this call waited for; return when ``raw`` is not one."""
        if not isinstance(raw, bytes) or len(raw) <= 1 + _NONCE_BYTES or raw[:1] != _FORMAT:
            return
        try:
            nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
            document = json.loads(self._aead.decrypt(nonce, sealed, _FAILURE_AAD_LABEL + canonical))
            if document["lease"].encode("ascii") not in waited_on:
                return  # someone else's failed fetch: not ours to repeat
            error_class = getattr(errors, document["class"], None)
            fields = dict(document["error"])
            message = str(fields.pop("message"))
            fields.pop("code", None)
        except (InvalidTag, ValueError, KeyError, TypeError, AttributeError):
            return  # unreadable: behave as if there were no marker (take the lease, try once)
        if not (isinstance(error_class, type) and issubclass(error_class, AuthorizationError)):
            error_class = AuthorizationError
        details = {k: v for k, v in fields.items() if isinstance(k, str) and k.isidentifier()}
        try:
            error = error_class(message, **details)
        except TypeError:  # a subclass with a narrower constructor
            error = error_class(message)
        raise error

    def _seal(self, token: AccessToken, fresh_until: float, canonical: bytes) -> bytes:
        document = {
            "token": token.token,
            "token_type": token.token_type,
            "expires_at": token.expires_at,
            "scopes": sorted(token.scopes),
            "issued_token_type": token.issued_token_type,
            "fresh_until": fresh_until,
        }
        plaintext = json.dumps(document, separators=(",", ":")).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, _AAD_LABEL + canonical)

    async def _read(self, redis: Redis, entry_name: str, *others: str) -> tuple[Any, Any, Any, int]:
        """One round trip: the entry, the lease and failure keys (when named), the entry's TTL in ms."""
        pipe = redis.pipeline(transaction=False)
        pipe.mget(entry_name, *others)
        pipe.pttl(entry_name)
        values, ttl_ms = await self._call("read", pipe.execute())
        values = [*values, None, None][:3]
        return values[0], values[1], values[2], int(ttl_ms)

    def _open(
        self, raw: object, canonical: bytes, stale: str | None, ttl_ms: int
    ) -> tuple[AccessToken, float] | None:
        """A usable (token, fresh_until) from a stored value, or ``None``: absent, undecryptable,
        expired by this worker's clock, or the token the caller saw rejected.

        ``fresh_until`` is the writer's (authenticated) value, cut to the entry's remaining Redis TTL:
        a writer whose clock runs ahead cannot make readers keep a token longer than Redis does.
        """
        if not isinstance(raw, bytes):
            return None
        if len(raw) <= 1 + _NONCE_BYTES or raw[:1] != _FORMAT:
            log.warning("token store: ignoring a malformed entry (key id %s)", self.key_id)
            return None
        try:
            nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
            plaintext = self._aead.decrypt(nonce, sealed, _AAD_LABEL + canonical)
            document: dict[str, Any] = json.loads(plaintext)
            token = AccessToken(
                document["token"],
                token_type=document["token_type"],
                expires_at=document["expires_at"],
                scopes=frozenset(document["scopes"]),
                issued_token_type=document["issued_token_type"],
            )
            until = float(document["fresh_until"])
            if ttl_ms > 0:
                until = min(until, self._now() + ttl_ms / 1000)
        except InvalidTag:
            # Not sealed for this key name under our key: tampered with, or moved from another key.
            log.warning("token store: an entry failed authentication; ignored (key id %s)", self.key_id)
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("token store: ignoring an entry with a malformed payload (key id %s)", self.key_id)
            return None
        if until <= self._now():
            return None
        if stale is not None and (stale == ANY_TOKEN or stale == token.fingerprint):
            return None
        return token, until

    # --- Redis plumbing ---------------------------------------------------------------------------

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    def _client(self) -> Redis:
        if self._client_given is not None:
            self._load_errors()
            return self._client_given
        # A redis.asyncio pool belongs to the event loop that opened it (like httpx.AsyncClient).
        loop = asyncio.get_running_loop()
        if self._own is None or self._own_loop is not loop:
            asyncio_redis = self._load_errors()
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            assert self._url is not None
            self._own = asyncio_redis.Redis.from_url(
                self._url,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                # One reconnect (a pooled connection may be stale after a Redis restart), no more:
                # an outage must surface within about 2 x socket_timeout, not after a retry ladder.
                retry=Retry(NoBackoff(), 1),
                decode_responses=False,
            )
            self._own_loop = loop
        return self._own

    def _load_errors(self) -> Any:
        try:
            import redis.asyncio as asyncio_redis
            import redis.exceptions as redis_exceptions
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "RedisTokenStore needs the redis package: install mcpclient-auth[redis]"
            ) from None
        self._errors = (redis_exceptions.RedisError, OSError)
        return asyncio_redis

    async def _call(self, what: str, operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except self._errors as exc:
            raise _Down(f"{what}: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        # No URL (it may carry a password) and no key material: the key id is a one-way HKDF output.
        return (
            f"RedisTokenStore(prefix={self.prefix!r}, key_id={self.key_id!r}, lease_ttl={self.lease_ttl:g}, "
            f"wait_timeout={self.wait_timeout:g}, on_unavailable={self.on_unavailable!r})"
        )
