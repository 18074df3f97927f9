"""The test infrastructure itself: in-repo vectors stay in sync, the Redis fixture is a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer

SHARED_VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


@pytest.mark.parametrize("name", ["rfc9421_vectors.json", "rfc9530_vectors.json"])
def test_vectors_are_byte_identical_to_shared(vectors_dir: Path, name: str) -> None:
    ours = (vectors_dir / name).read_bytes()
    assert ours, name
    if not (SHARED_VECTORS / name).is_file():
        pytest.skip("no ../shared beside the checkout; the in-repo copy is used alone")
    assert ours == (SHARED_VECTORS / name).read_bytes()


def test_redis_fixture_is_a_real_server_that_can_be_stopped(redis_server: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_server.url)
    assert client.set("k", b"v", nx=True, ex=5)
    assert not client.set("k", b"w", nx=True, ex=5)  # SET NX: the atomic primitive the stores use
    redis_server.stop()
    assert not redis_server.ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(redis_server.url, socket_timeout=1).ping()
    redis_server.start()
    assert redis.Redis.from_url(redis_server.url).get("k") is None  # no persistence across restarts
