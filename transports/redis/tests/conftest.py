"""Fixtures: a real redis-server on 127.0.0.1 (shared, or one per test) and backends on it.

Most tests share one server and isolate themselves by a unique key prefix. Tests that
kill or restart Redis get their own server (``own_redis``). When the environment names
a running Redis (``DARKMESH_TEST_REDIS_URL``, set by scripts/test-all), the shared
tests use it instead of starting one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.settings import RedisSettings


def _load_helper() -> Any:
    # importlib mode: the tests folder is no package, so load the helper by path.
    name = "darkmesh_redis_tests_redis_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("redis_server.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


redis_server = _load_helper()


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


def make_settings(url: str, prefix: str | None = None, **overrides: Any) -> RedisSettings:
    values: dict[str, Any] = {
        "url": url,
        "key_prefix": prefix or f"test-{uuid.uuid4().hex[:12]}:",
        "retry_attempts": 2,
        "retry_backoff_seconds": 0.05,
        "socket_timeout_seconds": 1.0,
        "connect_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return RedisSettings(**values)


@pytest.fixture
def settings_factory(shared_redis_url: str) -> Any:
    def factory(**overrides: Any) -> RedisSettings:
        return make_settings(shared_redis_url, **overrides)

    return factory


@pytest_asyncio.fixture
async def redis_backend(settings_factory: Any) -> AsyncIterator[RedisRelayBackend]:
    """A started backend on a fresh key prefix of the shared Redis."""
    backend = RedisRelayBackend(settings_factory())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
