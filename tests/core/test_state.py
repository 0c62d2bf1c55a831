"""Plugin state areas in the node database, and the host's purge of expired entries."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from sdl_core.state import NodeDatabase, StateArea
from sdl_core.testing.host import make_host


def rows(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT feature, key FROM plugin_state").fetchall())


def test_areas_are_separate_and_expired_entries_are_invisible(tmp_path: Path) -> None:
    db = NodeDatabase(tmp_path / "node.db")
    one, two = StateArea(db, "one"), StateArea(db, "two")
    one.put("k", {"v": 1})
    one.put("gone", 1, ttl=0.01)
    time.sleep(0.02)
    assert one.get("k") == {"v": 1} and two.get("k") is None
    assert one.get("gone", "default") == "default"
    assert [k for k, _ in one.items()] == ["k"]
    assert one.remember_once("once", 60) is True and one.remember_once("once", 60) is False
    assert two.remember_once("once", 60) is True
    assert one.delete("k") is True and one.delete("k") is False
    db.close()


def test_database_purge_removes_every_features_expired_rows_only(tmp_path: Path) -> None:
    db = NodeDatabase(tmp_path / "node.db")
    StateArea(db, "one").put("old", 1, ttl=0.01)
    StateArea(db, "two").put("old", 1, ttl=0.01)
    StateArea(db, "two").put("kept", 1, ttl=60)
    StateArea(db, "two").put("forever", 1)
    time.sleep(0.02)
    assert db.purge_expired() == 2
    db.close()
    assert rows(tmp_path / "node.db") == [("two", "forever"), ("two", "kept")]


@pytest.mark.asyncio
async def test_a_started_host_purges_expired_state_and_stops_the_purger(tmp_path: Path) -> None:
    host = make_host(node_id="node_a", data_dir=str(tmp_path / "data"))
    host.state("skill").put("expired", 1, ttl=0.01)
    host.state("skill").put("live", 1, ttl=60)
    await asyncio.sleep(0.02)
    await host.start()
    try:
        assert rows(tmp_path / "data" / "node.db") == [("skill", "live")]  # purged at start
    finally:
        await host.stop()
    assert host._state_purger is None
