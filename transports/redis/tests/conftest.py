"""Fixtures: a real redis-server on 127.0.0.1 (shared, or one per test) and backends on it.

Most tests share one server and isolate themselves by a unique key prefix. Tests that
kill or restart Redis get their own server (``own_redis``). When the environment names
a running Redis (``DARKMESH_TEST_REDIS_URL``, set by scripts/test-all), the shared
tests use it instead of starting one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from darkmesh_redis import testing as redis_server
from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.testing import make_settings, started_backend


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis every test may use under its own key prefix."""
    given = os.environ.get("DARKMESH_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = redis_server.RedisServer(tmp_path_factory.mktemp("redis-shared"),
                                      appendonly=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of this test alone (append-only file on), stopped afterwards."""
    server = redis_server.RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def settings_factory(shared_redis_url: str) -> Any:
    def factory(**overrides: Any) -> Any:
        return make_settings(shared_redis_url, **overrides)

    return factory


@pytest_asyncio.fixture
async def redis_backend(settings_factory: Any) -> AsyncIterator[RedisRelayBackend]:
    """A started backend on a fresh key prefix of the shared Redis."""
    async with started_backend(settings_factory()) as backend:
        yield backend

