"""Root pytest configuration. Area-specific fixtures live in tests/support/ and the area's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_binary

#: RFC 9421 / RFC 9530 vectors, copied into the repository (see tests/vectors/README.md) so a fresh
#: clone needs nothing beside it.
VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The folder holding ``rfc9421_vectors.json`` and ``rfc9530_vectors.json``."""
    return VECTORS


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        message = "redis-server is not installed (apt-get install -y redis-server; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(binary).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 (one per test session), empty at the start of each test.

    A test may stop it (fail-closed checks); it is started again for the next test.
    """
    _redis_session.start()
    _redis_session.flush()
    yield _redis_session
    _redis_session.start()
