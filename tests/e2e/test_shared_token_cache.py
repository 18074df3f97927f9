"""Shared token cache across agent worker processes: RedisTokenStore behind TokenCache (issue #17).

Real parts only: a ``redis-server`` on 127.0.0.1 (fixture ``redis_server``), the test IdP
(tests/support/idp.py) served on 127.0.0.1 in a thread of this process and counting token requests,
and worker *processes* (tests/support/token_worker.py) each running its own event loop, in-process
layer and Redis connection pool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mcpclient_auth.authz import AccessToken, CacheKey, RedisTokenStore, TokenCache, TokenExchange
from mcpclient_auth.authz.base import ID_TOKEN_TYPE
from mcpclient_auth.authz.redis_store import canonical_key, generate_encryption_key
from mcpclient_auth.errors import InvalidTokenResponse, TokenStoreTimeout, TokenStoreUnavailable
from mcpclient_auth.principal import Principal, token_digest
from tests.support.idp import IdP, Reply
from tests.support.redis_server import RedisServer
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "alice-sso-token"
WORKERS = 4
CALLS = 50


@pytest.fixture
def idp() -> Iterator[IdP]:
    provider = IdP(clients={"agent": "s3cret"}, subjects={SUBJECT: "alice", "bob-sso-token": "bob"})
    with serve(provider.app) as base_url:
        provider.base_url = base_url
        yield provider


class Worker:
    """One ``tests.support.token_worker`` process; lines from its stdout arrive through a queue."""

    def __init__(self, redis_url: str, token_url: str, key: bytes, **options: float) -> None:
        argv = [sys.executable, "-m", "tests.support.token_worker", "--redis", redis_url,
                "--token-url", token_url, "--key", key.hex(), "--calls", str(CALLS)]  # fmt: skip
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            return dict(json.loads(self._lines.get(timeout=timeout)))
        except queue.Empty:
            raise AssertionError(f"worker {self.process.pid} said nothing within {timeout} s") from None

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        self._pumping.join(timeout=10)  # EOF once the process is gone
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # the pipe to a killed worker
                    stream.close()


def start_workers(count: int, redis_url: str, token_url: str, key: bytes, **options: float) -> list[Worker]:
    workers = [Worker(redis_url, token_url, key, **options) for _ in range(count)]
    for worker in workers:
        assert worker.read(timeout=120) == {"ready": True}  # imports done; 2 busy cores can be slow
    return workers


def redis_dump(url: str) -> dict[bytes, bytes]:
    """Every key in the server with its value (strings; other types would be a finding of their own)."""
    client = redis.Redis.from_url(url)
    try:
        dump: dict[bytes, bytes] = {}
        for name in client.scan_iter(count=1000):
            assert client.type(name) == b"string", f"unexpected Redis type for {name!r}"
            value = client.get(name)
            if value is not None:
                dump[name] = value
        return dump
    finally:
        client.close()


def forms_of(secret: str) -> list[bytes]:
    """The secret and the encodings someone might store it in."""
    raw = secret.encode()
    forms = [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]
    forms += [f.rstrip(b"=") for f in forms[1:]]
    forms.append(raw.hex().encode())
    return forms


def assert_no_plaintext(dump: dict[bytes, bytes], secrets_: list[str]) -> None:
    assert dump, "nothing was stored in Redis"
    for secret in secrets_:
        for form in forms_of(secret):
            for name, value in dump.items():
                assert form not in name, "a secret appears in a Redis key name"
                assert form not in value, "a secret appears in a Redis value"


# --- several worker processes ---------------------------------------------------------------------


def test_four_workers_fifty_calls_each_one_exchange_then_one_refresh(redis_server: RedisServer, idp: IdP) -> None:
    idp.expires_in = 11  # with skew 3: fresh for 8 s (room for a loaded machine), then all must refresh
    key = generate_encryption_key()
    workers = start_workers(WORKERS, redis_server.url, idp.token_url, key, skew=3)
    try:
        for worker in workers:
            worker.send("go")
        first = [worker.read() for worker in workers]
        assert all(r["ok"] for r in first), first
        tokens = {t for r in first for t in r["tokens"]}
        assert len(tokens) == 1, "the workers did not share one token"
        assert idp.count == 1, f"{WORKERS} workers x {CALLS} calls caused {idp.count} token requests"
        (token,) = tokens
        assert IdP.decode(token)["sub"] == "alice"

        # At rest: no token (in any encoding), no user id, subject token or digest, no audience.
        dump = redis_dump(redis_server.url)
        assert_no_plaintext(dump, [token, SUBJECT, token_digest(SUBJECT)])
        for name in dump:
            for clear in (b"alice", b"api://mcp", b"127.0.0.1", b"mcp.read"):
                assert clear not in name

        # Let the token go stale everywhere (in-process layers and Redis alike), then go again.
        fresh_until = float(first[0]["expires_at"]) - 3
        deadline = time.monotonic() + 30
        while time.time() < fresh_until + 0.2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for worker in workers:
            worker.send("go")
        second = [worker.read() for worker in workers]
        assert all(r["ok"] for r in second), second
        refreshed = {t for r in second for t in r["tokens"]}
        assert len(refreshed) == 1 and refreshed != tokens
        assert idp.count == 2, f"the refresh after expiry caused {idp.count - 1} token requests"
        # The refreshed token is at rest encrypted too (the scan covers every token the fleet held).
        assert_no_plaintext(redis_dump(redis_server.url), [*refreshed, token, SUBJECT, token_digest(SUBJECT)])
    finally:
        for worker in workers:
            worker.close()


def test_lease_holder_killed_mid_exchange_the_others_still_get_a_token(
    redis_server: RedisServer, idp: IdP
) -> None:
    idp.queue(Reply.slow(8.0))  # the first exchange hangs: its worker dies while holding the lease
    key = generate_encryption_key()
    lease_ttl, wait_timeout = 1.0, 20.0
    workers = start_workers(
        WORKERS, redis_server.url, idp.token_url, key, lease_ttl=lease_ttl, wait_timeout=wait_timeout
    )
    holder, others = workers[0], workers[1:]
    try:
        holder.send("go")
        deadline = time.monotonic() + 30
        while idp.count < 1:  # the holder's request reached the IdP: it holds the lease now
            assert time.monotonic() < deadline, "the first worker never asked the IdP"
            time.sleep(0.02)
        leases = [name for name in redis_dump(redis_server.url) if name.endswith(b":lease")]
        assert len(leases) == 1
        for worker in others:
            worker.send("go")
        time.sleep(0.5)  # they find the lease held and wait (no request of their own yet)
        assert idp.count == 1
        holder.process.send_signal(signal.SIGKILL)
        holder.process.wait(timeout=10)

        results = [worker.read(timeout=wait_timeout + 30) for worker in others]
        assert all(r["ok"] for r in results), results  # within the bound: no token_store_timeout
        assert all(r["seconds"] < wait_timeout for r in results)
        assert len({t for r in results for t in r["tokens"]}) == 1
        assert idp.count == 2, "after the holder died, exactly one survivor should have fetched"
    finally:
        for worker in workers:
            worker.close()


# --- one process, several caches (= workers) on one store -------------------------------------------


def exchange(idp: IdP, cache: TokenCache) -> TokenExchange:
    return TokenExchange(
        idp.token_url, client_id="agent", client_secret="s3cret", audience="api://mcp",
        scopes=["mcp.read"], cache=cache,
    )  # fmt: skip


ALICE = Principal(id="alice", subject_token=SUBJECT)
BOB = Principal(id="bob", subject_token="bob-sso-token")


async def test_a_token_rejected_by_one_worker_is_not_handed_out_by_the_store_again(
    redis_server: RedisServer, idp: IdP
) -> None:
    store = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    worker_a, worker_b = exchange(idp, TokenCache(store=store)), exchange(idp, TokenCache(store=store))
    try:
        first = await worker_a.get_token(ALICE)
        assert await worker_b.get_token(ALICE) == first
        assert idp.count == 1
        worker_a.invalidate(ALICE, token=first)  # a 401 invalid_token at worker A
        second = await worker_a.get_token(ALICE)
        assert second.token != first.token and idp.count == 2
        worker_b.invalidate(ALICE, token=first)  # B meets the same 401 later: takes A's new token
        assert (await worker_b.get_token(ALICE)).token == second.token
        assert idp.count == 2
    finally:
        await worker_a.aclose()
        await worker_b.aclose()
        await store.aclose()


async def test_without_the_local_layer_every_call_reads_redis(redis_server: RedisServer, idp: IdP) -> None:
    store = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    source = exchange(idp, TokenCache(store=store, local=False))
    try:
        token = await source.get_token(ALICE)
        assert len(source.cache) == 0
        assert (await source.get_token(ALICE)).token == token.token
        assert idp.count == 1
        redis_server.flush()  # gone from Redis = gone: there is no copy in this process
        assert (await source.get_token(ALICE)).token != token.token
        assert idp.count == 2
    finally:
        await source.aclose()
        await store.aclose()


ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


async def test_sources_asking_for_different_token_types_never_share_a_token(
    redis_server: RedisServer, idp: IdP
) -> None:
    # Same IdP, client, user, audience and scopes; one source asks for an access token, the other for
    # an ID-JAG. Through one shared store the second used to get the first's access token.
    encryption_key = generate_encryption_key()
    stores = [RedisTokenStore(redis_server.url, encryption_key=encryption_key) for _ in range(2)]
    sources = [
        TokenExchange(
            idp.token_url,
            client_id="agent",
            client_secret="s3cret",
            audience="api://mcp",
            scopes=["mcp.read"],
            requested_token_type=token_type,
            cache=TokenCache(store=store),
        )
        for token_type, store in zip((None, ID_JAG), stores, strict=True)
    ]
    try:
        access = await sources[0].get_token(ALICE)
        id_jag = await sources[1].get_token(ALICE)
        assert access.issued_token_type == "urn:ietf:params:oauth:token-type:access_token"
        assert id_jag.issued_token_type == ID_JAG and id_jag.token != access.token
        assert idp.count == 2
        # And the subject token's type is part of the key: the same text as an ID token is another request.
        as_id_token = Principal(id="alice", subject_token=SUBJECT, subject_token_type=ID_TOKEN_TYPE)
        assert (await sources[0].get_token(as_id_token)).token != access.token
        assert idp.count == 3
    finally:
        for source in sources:
            await source.aclose()
        for store in stores:
            await store.aclose()


async def test_a_cached_token_of_another_type_is_refused(redis_server: RedisServer, idp: IdP) -> None:
    # Defence in depth: whatever a shared store hands back is checked against the requested type.
    store = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    source = TokenExchange(
        idp.token_url, client_id="agent", client_secret="s3cret", audience="api://mcp",
        scopes=["mcp.read"], requested_token_type=ID_JAG, cache=TokenCache(store=store),
    )  # fmt: skip
    try:
        key = source._key(ALICE, None, None)
        wrong = AccessToken("an-access-token", expires_at=time.time() + 600,
                            issued_token_type="urn:ietf:params:oauth:token-type:access_token")  # fmt: skip
        source.cache.put(key, wrong)
        with pytest.raises(InvalidTokenResponse) as caught:
            await source.get_token(ALICE)
        assert caught.value.details.get("field") == "issued_token_type" and "an-access-token" not in str(caught.value)
    finally:
        await source.aclose()
        await store.aclose()


# --- encryption at rest ----------------------------------------------------------------------------


def alice_key(audience: str = "api://mcp") -> CacheKey:
    return CacheKey(
        "http://127.0.0.1:1/token", "grant", "agent", "alice", token_digest(SUBJECT), None, (audience,), (),
        ("mcp.read",),
    )  # fmt: skip


class Factory:
    """Counts how often a store asked for a fresh token."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> AccessToken:
        self.calls += 1
        return AccessToken(f"issued-{self.calls}-{os.urandom(6).hex()}", expires_at=time.time() + 600)


def fresh(token: AccessToken) -> float:
    assert token.expires_at is not None
    return token.expires_at - 30


@pytest.mark.parametrize("local", [True, False])
async def test_a_re_obtain_after_invalidate_never_joins_an_older_flight(
    redis_server: RedisServer, local: bool
) -> None:
    # A concurrent call's flight reads Redis (which still holds T1); this call gets a 401 with T1,
    # invalidates it and re-obtains. Joining the older flight handed T1 back.
    store = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    cache, factory, key = TokenCache(store=store, local=local), Factory(), alice_key()
    try:
        first = await cache.fetch(key, factory)
        cache.clear()  # the local layer forgets it (as after its expiry); Redis still holds it
        concurrent_call = asyncio.create_task(cache.fetch(key, factory))
        for _ in range(3):
            await asyncio.sleep(0)  # its flight has sent the Redis read
        assert cache.in_flight == 1
        cache.invalidate(key, token=first)
        again = await cache.fetch(key, factory)
        assert again.token != first.token and factory.calls == 2
        assert (await concurrent_call).token == first.token  # it asked before the 401: its answer
        assert (await cache.fetch(key, factory)).token == again.token  # T1 did not come back here
        assert factory.calls == 2
    finally:
        await store.aclose()


def test_a_holder_that_lost_its_lease_does_not_overwrite_the_newer_token(redis_server: RedisServer) -> None:
    # Worker A's loop blocks (a synchronous call) longer than lease_ttl: it cannot renew, counts as
    # dead, B takes over and stores its token. A's late write used to overwrite B's.
    encryption_key, key = generate_encryption_key(), alice_key()
    results: dict[str, str] = {}

    def worker(name: str, block: float) -> None:
        async def factory() -> AccessToken:
            if block:
                time.sleep(block)  # blocks this worker's event loop: no lease renewal
            return AccessToken(f"token-of-{name}", expires_at=time.time() + 600)

        async def run() -> str:
            store = RedisTokenStore(redis_server.url, encryption_key=encryption_key, lease_ttl=1.0)
            try:
                return (await TokenCache(store=store).fetch(key, factory)).token
            finally:
                await store.aclose()

        results[name] = asyncio.run(run())

    holder = threading.Thread(target=worker, args=("A", 2.5))
    holder.start()
    time.sleep(0.3)
    taker = threading.Thread(target=worker, args=("B", 0))
    taker.start()
    holder.join(30)
    taker.join(30)
    assert results == {"A": "token-of-A", "B": "token-of-B"}  # each got a valid token

    async def later() -> str:
        factory = Factory()
        store = RedisTokenStore(redis_server.url, encryption_key=encryption_key)
        try:
            token = await TokenCache(store=store).fetch(key, factory)
        finally:
            await store.aclose()
        assert factory.calls == 0
        return token.token

    assert asyncio.run(later()) == "token-of-B"  # the fleet keeps the token of the live holder


async def test_entries_are_encrypted_and_bound_to_their_key(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="mcpclient_auth.authz.redis_store")
    encryption_key = generate_encryption_key()
    store = RedisTokenStore(redis_server.url, encryption_key=encryption_key)
    factory = Factory()
    try:
        token, _ = await store.fetch(alice_key(), factory, fresh_until=fresh)
        assert (await store.fetch(alice_key(), factory, fresh_until=fresh))[0] == token
        assert factory.calls == 1
        dump = redis_dump(redis_server.url)
        assert_no_plaintext(dump, [token.token, SUBJECT, token_digest(SUBJECT), "alice"])

        # A ciphertext moved under another cache key's name does not decrypt there (AAD = cache key).
        (entry,) = [name for name in dump if name.endswith(b":token")]
        other_entry = store._names(canonical_key(alice_key("api://other")))[0]
        client = redis.Redis.from_url(redis_server.url)
        client.set(other_entry, dump[entry], px=60_000)
        moved, _ = await store.fetch(alice_key("api://other"), factory, fresh_until=fresh)
        assert moved != token and factory.calls == 2

        # A flipped bit anywhere in the value: never returned, replaced by a fresh fetch.
        tampered = bytearray(dump[entry])
        tampered[-1] ^= 1
        client.set(entry, bytes(tampered), px=60_000)
        client.close()
        again, _ = await store.fetch(alice_key(), factory, fresh_until=fresh)
        assert again != token and factory.calls == 3
        # Both refusals were logged, naming the key id only: no token, no key material.
        logged = [r.getMessage() for r in caplog.records]
        assert sum("failed authentication" in m for m in logged) >= 2  # (read, then re-read under the lease)
        for message in logged:
            assert store.key_id in message
            for secret in (token.token, moved.token, encryption_key.hex(), encryption_key.decode("latin-1")):
                assert secret not in message
    finally:
        await store.aclose()


async def test_a_wrong_encryption_key_reads_nothing(redis_server: RedisServer) -> None:
    """Decision: a worker with another key is a miss (own fetch, own namespace), never a foreign
    token and never an error (that is also how a key rotation rolls out)."""
    right = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    wrong = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key())
    factory = Factory()
    try:
        token, _ = await right.fetch(alice_key(), factory, fresh_until=fresh)
        # Even with the right entry copied under the wrong store's name, it does not decrypt.
        (entry,) = [n for n in redis_dump(redis_server.url) if n.endswith(b":token")]
        wrong_entry = wrong._names(canonical_key(alice_key()))[0]
        assert wrong_entry.encode() != entry
        client = redis.Redis.from_url(redis_server.url)
        client.copy(entry, wrong_entry)
        client.close()
        other, _ = await wrong.fetch(alice_key(), factory, fresh_until=fresh)
        assert other != token and factory.calls == 2
        assert (await right.fetch(alice_key(), factory, fresh_until=fresh))[0] == token
        assert factory.calls == 2
    finally:
        await right.aclose()
        await wrong.aclose()


def test_no_key_material_in_repr_or_errors() -> None:
    key = bytes(range(32))
    store = RedisTokenStore("redis://:hunter2@127.0.0.1:1/0", encryption_key=key)
    text = repr(store) + repr(TokenCache(store=store))
    for form in [*forms_of(key.decode("latin-1")), key, b"hunter2"]:
        assert form.decode("latin-1") not in text
    assert store.key_id in text
    with pytest.raises(Exception) as info:
        RedisTokenStore("redis://127.0.0.1:1/0", encryption_key=key[:31])
    assert getattr(info.value, "code", None) == "configuration_error"
    assert key[:31].hex() not in str(info.value)


# --- Redis down: fail closed -----------------------------------------------------------------------


async def test_redis_stopped_fails_closed_but_fresh_local_tokens_still_serve(
    redis_server: RedisServer, idp: IdP
) -> None:
    store = RedisTokenStore(redis_server.url, encryption_key=generate_encryption_key(), socket_timeout=1)
    source = exchange(idp, TokenCache(store=store))
    redis_only = exchange(idp, TokenCache(store=store, local=False))
    try:
        alice = await source.get_token(ALICE)
        await redis_only.get_token(ALICE)  # from Redis: no request
        assert idp.count == 1
        redis_server.stop()
        assert await source.get_token(ALICE) == alice  # the in-process layer: fresh, same token
        with pytest.raises(TokenStoreUnavailable) as info:
            await source.get_token(BOB)  # a miss needs the store: no fetch of our own
        assert info.value.code == "token_store_unavailable" and info.value.retryable
        with pytest.raises(TokenStoreUnavailable):
            await redis_only.get_token(ALICE)
        assert idp.count == 1, "the IdP was asked although the store was down"
        assert redis_server.url.split("@")[-1] not in str(info.value)
        redis_server.start()  # back (empty): the same store recovers, no restart of the worker
        assert IdP.decode((await source.get_token(BOB)).token)["sub"] == "bob"
        assert idp.count == 2
    finally:
        await source.aclose()
        await redis_only.aclose()
        await store.aclose()


async def test_redis_stopped_with_on_unavailable_fetch_asks_the_idp(redis_server: RedisServer, idp: IdP) -> None:
    store = RedisTokenStore(
        redis_server.url, encryption_key=generate_encryption_key(), socket_timeout=1, on_unavailable="fetch"
    )
    source = exchange(idp, TokenCache(store=store))
    try:
        redis_server.stop()
        token = await source.get_token(BOB)
        assert IdP.decode(token.token)["sub"] == "bob" and idp.count == 1
        assert await source.get_token(BOB) == token and idp.count == 1  # kept in-process
    finally:
        await source.aclose()
        await store.aclose()


async def test_a_live_holder_slower_than_the_wait_bound_gives_a_typed_timeout(
    redis_server: RedisServer, idp: IdP
) -> None:
    idp.queue(Reply.slow(3.0))
    key = generate_encryption_key()
    patient = RedisTokenStore(redis_server.url, encryption_key=key, lease_ttl=0.5)
    hasty = RedisTokenStore(redis_server.url, encryption_key=key, lease_ttl=0.5, wait_timeout=0.5)
    holder, waiter = exchange(idp, TokenCache(store=patient)), exchange(idp, TokenCache(store=hasty))
    try:
        import asyncio

        holding = asyncio.ensure_future(holder.get_token(ALICE))
        deadline = time.monotonic() + 30
        while idp.count < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # The holder renews its 0.5 s lease while the IdP takes 3 s: the waiter gives up, typed.
        with pytest.raises(TokenStoreTimeout) as info:
            await waiter.get_token(ALICE)
        assert info.value.code == "token_store_timeout"
        token = await holding
        assert idp.count == 1
        assert await waiter.get_token(ALICE) == token  # once stored, the waiter reads it
        assert idp.count == 1
    finally:
        await holder.aclose()
        await waiter.aclose()
        await patient.aclose()
        await hasty.aclose()


async def test_a_failed_fetch_fails_its_waiters_once_and_is_not_cached(redis_server: RedisServer, idp: IdP) -> None:
    import asyncio

    from mcpclient_auth.errors import TokenExchangeRejected

    refused = json.dumps({"error": "invalid_grant"}).encode()
    idp.queue(Reply(kind="raw", status=400, body=refused, delay=1.5))  # slow, then refused
    key = generate_encryption_key()
    store_a = RedisTokenStore(redis_server.url, encryption_key=key, lease_ttl=0.5)
    store_b = RedisTokenStore(redis_server.url, encryption_key=key, lease_ttl=0.5)
    worker_a, worker_b = exchange(idp, TokenCache(store=store_a)), exchange(idp, TokenCache(store=store_b))
    try:
        first = asyncio.ensure_future(worker_a.get_token(ALICE))
        deadline = time.monotonic() + 30
        while idp.count < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # B arrives while A's request is running: it waits on A's lease, then gets A's error.
        with pytest.raises(TokenExchangeRejected) as info:
            await worker_b.get_token(ALICE)
        assert info.value.reason == "exchange_rejected" and info.value.code == "token_exchange_failed"
        with pytest.raises(TokenExchangeRejected):
            await first
        assert idp.count == 1, "the waiting worker repeated a request that had just been refused"
        # Not cached: the next call asks again (and now the IdP issues).
        assert IdP.decode((await worker_b.get_token(ALICE)).token)["sub"] == "alice"
        assert idp.count == 2
    finally:
        await worker_a.aclose()
        await worker_b.aclose()
        await store_a.aclose()
        await store_b.aclose()


async def test_a_client_passed_in_is_used_and_left_open(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    from mcpclient_auth.errors import ConfigurationError

    key = generate_encryption_key()
    with pytest.raises(ConfigurationError):
        RedisTokenStore(client=aioredis.Redis.from_url(redis_server.url, decode_responses=True), encryption_key=key)
    with pytest.raises(ConfigurationError):
        RedisTokenStore(redis_server.url, client=aioredis.Redis.from_url(redis_server.url), encryption_key=key)
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisTokenStore(client=client, encryption_key=key)
    factory = Factory()
    token, _ = await store.fetch(alice_key(), factory, fresh_until=fresh)
    await store.aclose()
    assert await client.ping()  # still open: its owner closes it
    by_url = RedisTokenStore(redis_server.url, encryption_key=key)  # another worker, same key
    assert (await by_url.fetch(alice_key(), factory, fresh_until=fresh))[0] == token
    assert factory.calls == 1
    await by_url.aclose()
    await client.aclose()


async def test_the_documented_acl_is_enough(redis_server: RedisServer, idp: IdP) -> None:
    """docs/production.md: agent workers need only these commands on the token prefix."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", "agent-worker", "on", ">worker-pass", "resetkeys", "~mcpclient-auth:token:*",
        "-@all", "+get", "+set", "+mget", "+pttl", "+del", "+eval", "+pexpire",
    )  # fmt: skip
    url = redis_server.url.replace("redis://", "redis://agent-worker:worker-pass@")
    store = RedisTokenStore(url, encryption_key=generate_encryption_key())
    source = exchange(idp, TokenCache(store=store, local=False))
    try:
        idp.queue(Reply.error("invalid_grant"))  # the failure marker too
        from mcpclient_auth.errors import TokenExchangeRejected

        with pytest.raises(TokenExchangeRejected):
            await source.get_token(ALICE)
        token = await source.get_token(ALICE)
        source.invalidate(ALICE, token=token)  # compare-and-delete of a stale entry
        assert (await source.get_token(ALICE)).token != token.token
        assert idp.count == 3
        assert (await source.get_token(ALICE)).token != token.token and idp.count == 3
    finally:
        await source.aclose()
        await store.aclose()
        admin.execute_command("ACL", "DELUSER", "agent-worker")
        admin.close()


async def test_a_writer_with_a_clock_ahead_cannot_stretch_a_readers_expiry(redis_server: RedisServer) -> None:
    key = generate_encryption_key()
    ahead = lambda: time.time() + 3600  # noqa: E731 - a worker whose clock runs an hour fast
    writer = RedisTokenStore(redis_server.url, encryption_key=key, clock=ahead)
    reader = RedisTokenStore(redis_server.url, encryption_key=key)

    async def issue() -> AccessToken:
        return AccessToken("issued-by-the-fast-worker", expires_at=ahead() + 600)

    try:
        _, writer_until = await writer.fetch(alice_key(), issue, fresh_until=fresh)
        assert writer_until > time.time() + 3600
        token, until = await reader.fetch(alice_key(), Factory(), fresh_until=fresh)
        assert token.token == "issued-by-the-fast-worker"
        assert until <= time.time() + 570  # the entry's Redis TTL (570 s), not the writer's clock
    finally:
        await writer.aclose()
        await reader.aclose()
