"""Durable per-plugin state in the node's embedded database.

``host.state("warm_intro")`` gives a :class:`StateArea`: a namespaced JSON key/value
table with atomic set-if-absent and expiry, committed with fsync (WAL,
``synchronous=FULL``) so a restart between two steps of a flow loses nothing. A plugin
that needs its own tables opens :meth:`StateArea.connect` and prefixes them with its
feature name.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plugin_state (
    feature TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    PRIMARY KEY (feature, key)
);
CREATE INDEX IF NOT EXISTS plugin_state_expiry ON plugin_state (expires_at);
"""


def connect(path: Path, *, busy_timeout: float = 30.0) -> sqlite3.Connection:
    """Open a database the way every embedded store of Darkmesh does (WAL, FULL sync,
    autocommit so that :func:`write_transaction` delimits every write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` … ``COMMIT`` write transaction on ``conn`` (opened by
    :func:`connect`, so in autocommit mode), rolled back if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class NodeDatabase:
    """The node's own SQLite file (``<data_dir>/node.db``), shared by state areas."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._lock = threading.RLock()
        with self._lock:
            self._conn.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_transaction(self._conn) as conn:
            yield conn

    def purge_expired(self) -> int:
        """Delete every feature's expired entries; return how many went."""
        with self.transaction() as conn:
            return conn.execute(
                "DELETE FROM plugin_state WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (time.time(),),
            ).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class StateArea:
    """One plugin's namespace in the node database."""

    def __init__(self, db: NodeDatabase, feature: str) -> None:
        self.db = db
        self.feature = feature

    def get(self, key: str, default: Any = None) -> Any:
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT value, expires_at FROM plugin_state WHERE feature=? AND key=?",
                (self.feature, key),
            ).fetchone()
        if row is None or (row[1] is not None and row[1] <= now):
            return default
        return json.loads(row[0])

    def put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        now = time.time()
        expires = now + ttl if ttl is not None else None
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO plugin_state (feature, key, value, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(feature, key) DO UPDATE SET "
                "value=excluded.value, updated_at=excluded.updated_at, "
                "expires_at=excluded.expires_at",
                (self.feature, key, json.dumps(value, separators=(",", ":")), now, expires),
            )

    def put_if_absent(self, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Store ``value`` unless a live entry exists; True when stored."""
        now = time.time()
        expires = now + ttl if ttl is not None else None
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM plugin_state WHERE feature=? AND key=? AND expires_at IS NOT NULL "
                "AND expires_at <= ?",
                (self.feature, key, now),
            )
            cur = conn.execute(
                "INSERT OR IGNORE INTO plugin_state (feature, key, value, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.feature, key, json.dumps(value, separators=(",", ":")), now, expires),
            )
            return cur.rowcount == 1

    def remember_once(self, key: str, ttl: float) -> bool:
        """Atomic set-if-absent with expiry: True the first time ``key`` is seen."""
        return self.put_if_absent(key, 1, ttl=ttl)

    def delete(self, key: str) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM plugin_state WHERE feature=? AND key=?", (self.feature, key)
            )
            return cur.rowcount > 0

    def items(self, prefix: str = "", *, limit: int | None = None) -> list[tuple[str, Any]]:
        """Live entries whose key starts with ``prefix``, oldest update first."""
        now = time.time()
        sql = (
            "SELECT key, value FROM plugin_state WHERE feature=? AND key >= ? AND key < ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY updated_at, key"
        )
        params: list[Any] = [self.feature, prefix, prefix + "\U0010ffff", now]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(k, json.loads(v)) for k, v in rows]

    def purge_expired(self) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM plugin_state WHERE feature=? AND expires_at IS NOT NULL "
                "AND expires_at <= ?",
                (self.feature, time.time()),
            )
            return cur.rowcount

    def connect(self) -> sqlite3.Connection:
        """A fresh connection to the node database for the plugin's own tables."""
        return connect(self.db.path)
