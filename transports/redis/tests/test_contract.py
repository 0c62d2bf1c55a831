"""The core's relay backend contract, run against Redis (shared server, fresh prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from darkmesh_redis.backend import RedisRelayBackend

from sdl_core.testing.relay_contract import DurableRelayBackendContract, RelayBackendContract


class TestRedisRelayBackend(RelayBackendContract):
    @pytest_asyncio.fixture
    async def backend(self, redis_backend: RedisRelayBackend) -> RedisRelayBackend:
        return redis_backend


class TestRedisRelayBackendDurable(DurableRelayBackendContract):
    """A relay process restart: the data stays in Redis, a new backend reads it."""

    @pytest_asyncio.fixture
    async def backend(self, settings_factory: Any) -> AsyncIterator[RedisRelayBackend]:
        self._settings = settings_factory()
        self._current = RedisRelayBackend(self._settings)
        await self._current.start()
        yield self._current
        await self._current.close()

    @pytest_asyncio.fixture
    async def reopen(
        self, backend: RedisRelayBackend
    ) -> Callable[[], Awaitable[RedisRelayBackend]]:
        async def reopen() -> RedisRelayBackend:
            await self._current.close()
            self._current = RedisRelayBackend(self._settings)
            await self._current.start()
            return self._current

        return reopen
