"""The built-in relay backends against the core's contract suites."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from sdl_core.default_plugins import memory_relay, sqlite_relay
from sdl_core.errors import RelayUnavailable
from sdl_core.host import RelayHost
from sdl_core.plugins import make_plugin_manager
from sdl_core.protocols import RelayBackend
from sdl_core.relay.memory_backend import MemoryRelayBackend
from sdl_core.relay.sqlite_backend import SqliteRelayBackend
from sdl_core.settings import RelaySettings
from sdl_core.testing.relay_contract import (
    DurableRelayBackendContract,
    RelayBackendContract,
    make_post,
)

BUILTINS = {"darkmesh-sdl.memory", "darkmesh-sdl.sqlite"}


class TestMemoryBackend(RelayBackendContract):
    @pytest_asyncio.fixture
    async def backend(self) -> AsyncIterator[RelayBackend]:
        b = MemoryRelayBackend()
        await b.start()
        yield b
        await b.close()


class TestSqliteBackend(RelayBackendContract, DurableRelayBackendContract):
    @pytest_asyncio.fixture
    async def opened(self, tmp_path: Path) -> AsyncIterator[list[SqliteRelayBackend]]:
        # Every backend opened in the test, the latest last; all closed at teardown.
        backends = [SqliteRelayBackend(tmp_path / "relay.db")]
        await backends[0].start()
        yield backends
        for b in backends:
            await b.close()

    @pytest.fixture
    def backend(self, opened: list[SqliteRelayBackend]) -> RelayBackend:
        return opened[0]

    @pytest.fixture
    def reopen(
        self, opened: list[SqliteRelayBackend], tmp_path: Path
    ) -> Callable[[], Awaitable[RelayBackend]]:
        async def reopen() -> RelayBackend:
            await opened[-1].close()
            fresh = SqliteRelayBackend(tmp_path / "relay.db")
            await fresh.start()
            opened.append(fresh)
            return fresh

        return reopen


# ------------------------------------------------------------------- sqlite only


@pytest.mark.asyncio
async def test_a_deleted_database_gives_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    first = SqliteRelayBackend(path)
    await first.start()
    old_epoch = await first.epoch()
    await first.publish(make_post(), time.time() + 60)
    await first.close()
    for leftover in tmp_path.glob("relay.db*"):
        leftover.unlink()
    second = SqliteRelayBackend(path)
    await second.start()
    try:
        assert await second.epoch() != old_epoch
        assert (await second.publish(make_post(), time.time() + 60))["seq"] == 1
    finally:
        await second.close()


@pytest.mark.asyncio
async def test_two_processes_sharing_a_file_see_one_epoch_and_seq(tmp_path: Path) -> None:
    # Two backend objects on one file stand in for two relay processes.
    a, b = SqliteRelayBackend(tmp_path / "relay.db"), SqliteRelayBackend(tmp_path / "relay.db")
    await a.start()
    await b.start()
    try:
        assert await a.epoch() == await b.epoch()
        await a.publish(make_post(), time.time() + 60)
        assert (await b.publish(make_post(), time.time() + 60))["seq"] == 2
        # b's long-poll sees a's publish through the polling fallback (no shared notifier).
        waiter = asyncio.create_task(b.pull("node_b", ["warm_intro_v1"], 2, 20, 5, time.time()))
        await asyncio.sleep(0.1)
        await a.publish(make_post(), time.time() + 60)
        result = await asyncio.wait_for(waiter, 3)
        assert [p["seq"] for p in result.posts] == [3]
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_sqlite_failure_raises_relay_unavailable(tmp_path: Path) -> None:
    backend = SqliteRelayBackend(tmp_path / "relay.db")
    await backend.start()
    try:
        def break_schema(conn: sqlite3.Connection) -> None:
            conn.execute("DROP TABLE posts")

        await backend._run(break_schema)
        with pytest.raises(RelayUnavailable) as info:
            await backend.publish(make_post(), time.time() + 60)
        assert info.value.status == 503
        assert "sqlite" in str(info.value.detail)
    finally:
        await backend.close()


@pytest.mark.asyncio
async def test_a_write_failing_with_any_error_is_rolled_back(tmp_path: Path) -> None:
    backend = SqliteRelayBackend(tmp_path / "relay.db")
    await backend.start()
    try:
        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM meta")
            raise ValueError("not an sqlite error")

        with pytest.raises(ValueError):
            await backend._run(lambda conn: backend._write(conn, half_then_fail))
        # Nothing half-done stays, and the connection takes the next write.
        stored = await backend.publish(make_post(), time.time() + 60)
        assert stored["seq"] == 1 and await backend.epoch()
    finally:
        await backend.close()


@pytest.mark.asyncio
async def test_unstarted_sqlite_backend_refuses_with_503(tmp_path: Path) -> None:
    with pytest.raises(RelayUnavailable, match="not started"):
        await SqliteRelayBackend(tmp_path / "relay.db").count_posts(time.time())


@pytest.mark.asyncio
async def test_unopenable_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "relay.db"
    directory.mkdir()  # a directory where the file should be
    backend = SqliteRelayBackend(directory)
    with pytest.raises(RelayUnavailable, match="cannot open"):
        await backend.start()


# ---------------------------------------------------------------------- plugins


def test_builtin_backends_are_installed_through_entry_points() -> None:
    pm = make_plugin_manager(only=BUILTINS)
    names = {spec.name for spec in RelayHost(pm, RelaySettings()).hooks.relay_backends()}
    assert names == {"memory", "sqlite"}


def test_hookimpls_yield_their_specs() -> None:
    assert [s.name for s in memory_relay.darkmesh_register_relay_backends()] == ["memory"]
    assert [s.name for s in sqlite_relay.darkmesh_register_relay_backends()] == ["sqlite"]


@pytest.mark.asyncio
async def test_sqlite_factory_puts_the_file_in_data_dir(tmp_path: Path) -> None:
    pm = make_plugin_manager(only=BUILTINS)
    relay = RelayHost(
        pm, RelaySettings(key=SecretStr("k"), backend="sqlite", data_dir=tmp_path / "d")
    )
    await relay.start()
    try:
        assert isinstance(relay.backend, SqliteRelayBackend)
        assert relay.backend.path == tmp_path / "d" / "relay.db"
        assert (tmp_path / "d" / "relay.db").exists()
    finally:
        await relay.stop()
