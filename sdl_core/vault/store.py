"""The vault: the node's embedded, encrypted :class:`sdl_core.Store`.

One SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=FULL``), one row per record:

* ``token`` — HMAC-SHA256 of the record key (the lower-cased email, ...) under a key
  derived from the vault key, so the file holds no plaintext identifier while upserts
  still find the row to replace;
* ``sealed`` — ``nonce ‖ AES-GCM(record JSON)`` with a random 96-bit nonce and
  associated data binding dataset, token and key version, so a row moved to another
  dataset or key, or left from another key version, fails authentication;
* ``position`` — the row id, assigned on first insert and kept by later upserts, so
  iteration follows first-insert order ("dataset order" in the v1 spec).

Every write call is one ``BEGIN IMMEDIATE … COMMIT`` transaction: a kill -9 leaves the
old or the new state. Per-dataset counts and a generation number live in their own
table and change in the same transaction, so ``count`` and ``changed_marker`` never
scan, and an upsert costs O(records given · log vault size): no full-vault rewrite.
Sealing happens before the write lock is taken; SQLite work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sdl_core.errors import DarkmeshError
from sdl_core.protocols import JSONObject
from sdl_core.records import record_key
from sdl_core.state import connect, write_transaction
from sdl_core.vault import keys as vault_keys
from sdl_core.vault.keys import VaultKeyError
from sdl_core.vault.records import check_dataset, decode_record, encode_records

log = logging.getLogger("darkmesh.vault")

NONCE_BYTES = 12
#: Lookup tokens are truncated HMACs: 128 bits keep collisions out of reach (about
#: 2^-64 at four billion records) and halve the index against a full digest.
TOKEN_BYTES = 16
CACHE_KIB = 64 * 1024
PAGE_SIZE = 2000
_CHECK_PLAINTEXT = b"darkmesh-vault key check"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vault_meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vault_datasets (
    dataset TEXT PRIMARY KEY,
    record_count INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vault_records (
    position INTEGER PRIMARY KEY,
    dataset TEXT NOT NULL,
    token BLOB NOT NULL,
    key_version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    UNIQUE (dataset, token)
);
CREATE INDEX IF NOT EXISTS vault_records_order ON vault_records (dataset, position);
"""

_UPSERT = (
    "INSERT INTO vault_records (position, dataset, token, key_version, sealed) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset, token) DO UPDATE SET "
    "key_version = excluded.key_version, sealed = excluded.sealed"
)


class VaultCorruptError(DarkmeshError):
    """A stored record failed authentication: the file was altered or mixed up."""


@dataclass
class _Keying:
    """The key material in force and where it came from."""

    version: int
    aead: AESGCM
    index_key: bytes
    mode: str  # "file" | "passphrase"
    key_file: Path | None


def _keying(master: bytes, version: int, mode: str, key_file: Path | None) -> _Keying:
    derived = vault_keys.subkeys(master)
    return _Keying(version, AESGCM(derived.seal), derived.index, mode, key_file)


def _aad(dataset: str, token: bytes, version: int) -> bytes:
    return b"darkmesh-vault/1\x00" + dataset.encode("utf-8") + b"\x00" + token + version.to_bytes(
        4, "big"
    )


def _check_aad(version: int) -> bytes:
    return b"darkmesh-vault/1\x00key-check\x00" + version.to_bytes(4, "big")


def _seal_check(keying: _Keying) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + keying.aead.encrypt(nonce, _CHECK_PLAINTEXT, _check_aad(keying.version))


def _check_opens(keying: _Keying, check: bytes) -> bool:
    try:
        plain = keying.aead.decrypt(check[:NONCE_BYTES], check[NONCE_BYTES:],
                                    _check_aad(keying.version))
    except InvalidTag:
        return False
    return plain == _CHECK_PLAINTEXT


class VaultStore:
    """The encrypted SQLite store. Build it with :meth:`open` (sync, at start-up)."""

    name = "vault"

    def __init__(self, path: Path, conn: sqlite3.Connection, keying: _Keying, epoch: str) -> None:
        self.path = path
        self._conn = conn
        self._keying = keying
        self._epoch = epoch
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
    ) -> VaultStore:
        """Open (creating if needed) the vault at ``path``.

        With ``passphrase`` the key is derived by scrypt with a salt stored in the
        vault; otherwise it is read from ``key_file`` (created 0600 on first use).

        :raises VaultKeyError: the key is missing, exposed, or does not open the vault.
        """
        db_path = Path(path)
        if not passphrase and key_file is None:
            raise VaultKeyError("the vault needs a key file or a passphrase")
        conn = connect(db_path)
        try:
            # Upserts land at random places in the (dataset, token) index; a page cache
            # that holds it keeps large vaults from paying a read per insert.
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.executescript(_SCHEMA)
            with write_transaction(conn):
                meta = dict(conn.execute("SELECT name, value FROM vault_meta").fetchall())
                if passphrase:
                    keying = _open_with_passphrase(conn, db_path, meta, passphrase)
                else:
                    assert key_file is not None
                    keying = _open_with_key_file(conn, db_path, meta, Path(key_file))
                epoch = meta.get("epoch")
                if epoch is None:
                    epoch = uuid.uuid4().hex
                    conn.execute("INSERT INTO vault_meta VALUES ('epoch', ?)", (epoch,))
        except BaseException:
            conn.close()
            raise
        if keying.key_file is not None:
            _finish_key_file(keying.key_file, keying)
            data_dir = db_path.parent
            if vault_keys.is_inside(keying.key_file, data_dir):
                log.warning("vault key file %s lies inside the data directory %s; keep it "
                            "elsewhere so a copy of the data alone cannot be read",
                            keying.key_file, data_dir)
        return cls(db_path, conn, keying, str(epoch))

    # ------------------------------------------------------------------ sealing

    def _token(self, dataset: str, key: str) -> bytes:
        return _token(self._keying.index_key, dataset, key)

    def _seal_all(self, keying: _Keying, dataset: str,
                  encoded: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
        out = []
        for key, plain in encoded:
            token = _token(keying.index_key, dataset, key)
            nonce = os.urandom(NONCE_BYTES)
            out.append(
                (token, nonce + keying.aead.encrypt(nonce, plain, _aad(dataset, token,
                                                                       keying.version)))
            )
        return out

    def _open_row(self, dataset: str, position: int, token: bytes, version: int,
                  sealed: bytes) -> JSONObject:
        return decode_record(self._open_bytes(dataset, position, token, version, sealed))

    def _open_bytes(self, dataset: str, position: int, token: bytes, version: int,
                    sealed: bytes) -> bytes:
        # Callers hold the lock, so a rotation cannot swap the key under this read.
        keying = self._keying
        if version != keying.version:
            raise VaultCorruptError(
                f"vault {self.path}: {dataset} record at position {position} is sealed under "
                f"key version {version}, not the current {keying.version}"
            )
        try:
            plain = keying.aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                        _aad(dataset, token, version))
        except InvalidTag as exc:
            raise VaultCorruptError(
                f"vault {self.path}: {dataset} record at position {position} failed "
                "authentication; the file was modified or mixed with another vault"
            ) from exc
        return plain

    # ------------------------------------------------------------------- writes

    def _transaction_write(self, dataset: str, records: Sequence[Any], *, clear: bool) -> int:
        encoded = encode_records(dataset, records)  # refuses bad input before any write
        with self._lock:
            self._ensure_open()
            if not encoded and not clear:
                return self._dataset_row_locked(dataset)[0]
            # Sealed under the lock (before the write transaction opens), so a key
            # rotation can never interleave between sealing and writing.
            version = self._keying.version
            sealed = self._seal_all(self._keying, dataset, encoded)
            conn = self._conn
            with write_transaction(conn):
                row = conn.execute(
                    "SELECT record_count FROM vault_datasets WHERE dataset = ?", (dataset,)
                ).fetchone()
                count = row[0] if row else 0
                if clear:
                    conn.execute("DELETE FROM vault_records WHERE dataset = ?", (dataset,))
                    count = 0
                start = conn.execute(
                    "SELECT COALESCE(MAX(position), 0) + 1 FROM vault_records"
                ).fetchone()[0]
                conn.executemany(
                    _UPSERT,
                    ((start + i, dataset, token, version, blob)
                     for i, (token, blob) in enumerate(sealed)),
                )
                # Replaced rows keep their old (smaller) position, so the rows at or
                # after ``start`` are exactly the new ones: an index range, not a scan.
                added = conn.execute(
                    "SELECT COUNT(*) FROM vault_records WHERE dataset = ? AND position >= ?",
                    (dataset, start),
                ).fetchone()[0]
                count += added
                conn.execute(
                    "INSERT INTO vault_datasets (dataset, record_count, generation) "
                    "VALUES (?, ?, 1) ON CONFLICT (dataset) DO UPDATE SET "
                    "record_count = excluded.record_count, generation = generation + 1",
                    (dataset, count),
                )
            return int(count)

    async def upsert(self, dataset: str, records: Sequence[JSONObject]) -> int:
        """Insert or replace ``records`` by key in one transaction; return the count."""
        return await asyncio.to_thread(self._transaction_write, dataset, records, clear=False)

    async def replace(self, dataset: str, records: Sequence[JSONObject]) -> int:
        """Make ``records`` the whole dataset in one transaction; return the count."""
        return await asyncio.to_thread(self._transaction_write, dataset, records, clear=True)

    def _delete(self, dataset: str, keys: list[str]) -> int:
        with self._lock:
            self._ensure_open()
            tokens = [(dataset, self._token(dataset, key)) for key in keys]
            conn = self._conn
            with write_transaction(conn):
                cursor = conn.executemany(
                    "DELETE FROM vault_records WHERE dataset = ? AND token = ?", tokens
                )
                removed = max(cursor.rowcount, 0)
                if removed:
                    conn.execute(
                        "UPDATE vault_datasets SET record_count = record_count - ?, "
                        "generation = generation + 1 WHERE dataset = ?",
                        (removed, dataset),
                    )
            return removed

    async def delete(self, dataset: str, keys: Iterable[str]) -> int:
        """Delete records by :func:`sdl_core.record_key`; return how many were removed."""
        check_dataset(dataset)
        wanted = list(dict.fromkeys(str(k) for k in keys))
        if not wanted:
            return 0
        return await asyncio.to_thread(self._delete, dataset, wanted)

    # -------------------------------------------------------------------- reads

    def _open_page(self, dataset: str, after: int) -> tuple[list[JSONObject], int]:
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                "SELECT position, token, key_version, sealed FROM vault_records "
                "WHERE dataset = ? AND position > ? ORDER BY position LIMIT ?",
                (dataset, after, PAGE_SIZE),
            ).fetchall()
            records = [self._open_row(dataset, *row) for row in rows]
        return records, (rows[-1][0] if rows else after)

    async def iterate(self, dataset: str) -> AsyncIterator[JSONObject]:
        """Yield the dataset's records in first-insert order, a page at a time."""
        after = 0
        while True:
            records, after = await asyncio.to_thread(self._open_page, dataset, after)
            if not records:
                return
            for record in records:
                yield record
            if len(records) < PAGE_SIZE:
                return

    def _dataset_row(self, dataset: str) -> tuple[int, int]:
        with self._lock:
            self._ensure_open()
            return self._dataset_row_locked(dataset)

    def _dataset_row_locked(self, dataset: str) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT record_count, generation FROM vault_datasets WHERE dataset = ?", (dataset,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def count(self, dataset: str) -> int:
        return (await asyncio.to_thread(self._dataset_row, dataset))[0]

    async def changed_marker(self, dataset: str) -> str:
        """``<vault epoch>:<dataset generation>``: changes with every write of it."""
        generation = (await asyncio.to_thread(self._dataset_row, dataset))[1]
        return f"{self._epoch}:{generation}"

    # ----------------------------------------------------------------- rotation

    def _rotate(self, new_passphrase: str | None) -> int:
        # The whole rotation, key staging included, holds the lock: writes and reads wait,
        # and two rotations cannot stage over each other.
        with self._lock:
            self._ensure_open()
            return self._rotate_locked(new_passphrase)

    def _rotate_locked(self, new_passphrase: str | None) -> int:
        old = self._keying
        version = old.version + 1
        staged: Path | None = None
        updates: dict[str, bytes] = {}
        if old.mode == "passphrase":
            if not new_passphrase:
                raise VaultKeyError("rotating a passphrase vault needs the new passphrase")
            salt = vault_keys.new_salt()
            master = vault_keys.derive_from_passphrase(new_passphrase, salt)
            updates["salt"] = salt
        else:
            if new_passphrase:
                raise VaultKeyError("this vault uses a key file; rotate it without a passphrase")
            assert old.key_file is not None
            master = vault_keys.new_master_key()
            staged = vault_keys.staged_path(old.key_file)
            staged.unlink(missing_ok=True)  # the live key opens the vault: a stale stage
            vault_keys.write_key_file(staged, master, version)
        new = _keying(master, version, old.mode, old.key_file)
        updates["key_version"] = str(version).encode()
        updates["key_check"] = _seal_check(new)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            after = 0
            while True:
                rows = conn.execute(
                    "SELECT position, dataset, token, key_version, sealed FROM vault_records"
                    " WHERE position > ? ORDER BY position LIMIT ?", (after, PAGE_SIZE),
                ).fetchall()
                if not rows:
                    break
                batch = []
                for position, dataset, token, row_version, sealed in rows:
                    plain = self._open_bytes(dataset, position, token, row_version, sealed)
                    key = record_key(dataset, decode_record(plain))
                    key_token = _token(new.index_key, dataset, key)
                    nonce = os.urandom(NONCE_BYTES)
                    blob = nonce + new.aead.encrypt(
                        nonce, plain, _aad(dataset, key_token, version)
                    )
                    batch.append((key_token, version, blob, position))
                conn.executemany(
                    "UPDATE vault_records SET token = ?, key_version = ?, sealed = ? "
                    "WHERE position = ?", batch,
                )
                after = rows[-1][0]
            conn.executemany(
                "INSERT INTO vault_meta (name, value) VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET value = excluded.value", list(updates.items()),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        conn.execute("COMMIT")
        # The vault now needs the new key; a crash before this rename is finished by
        # the next open (the staged key opens the vault, the old one does not).
        if staged is not None and old.key_file is not None:
            vault_keys.replace_key_file(old.key_file, staged)
        self._keying = new
        return version

    async def rotate_key(self, *, new_passphrase: str | None = None) -> int:
        """Re-seal every record under a new key in one transaction; return its version.

        Key-file vaults get a fresh random key (the file is replaced after the commit);
        passphrase vaults need ``new_passphrase`` and get a new salt.
        """
        return await asyncio.to_thread(self._rotate, new_passphrase)

    # ------------------------------------------------------------------- status

    @property
    def key_version(self) -> int:
        return self._keying.version

    def key_source(self) -> str:
        if self._keying.mode == "passphrase":
            return "passphrase"
        return f"file:{self._keying.key_file}"

    def status(self) -> JSONObject:
        """Records per dataset, key source and version, and the file path."""
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                "SELECT dataset, record_count FROM vault_datasets ORDER BY dataset"
            ).fetchall()
        return {
            "store": self.name,
            "path": str(self.path),
            "key_source": self.key_source(),
            "key_version": self._keying.version,
            "datasets": {dataset: count for dataset, count in rows},
        }

    # -------------------------------------------------------------------- close

    def _ensure_open(self) -> None:
        if self._closed:
            raise DarkmeshError(f"vault {self.path} is closed")

    async def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


# --------------------------------------------------------------------- helpers


def _token(index_key: bytes, dataset: str, key: str) -> bytes:
    """The opaque lookup token of a record key (keyed, so it cannot be guessed)."""
    message = dataset.encode("utf-8") + b"\x00" + key.encode("utf-8")
    return hmac.new(index_key, message, hashlib.sha256).digest()[:TOKEN_BYTES]


def _store_meta(conn: sqlite3.Connection, values: dict[str, bytes | str]) -> None:
    conn.executemany(
        "INSERT INTO vault_meta (name, value) VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET value = excluded.value", list(values.items()),
    )


def _open_with_passphrase(
    conn: sqlite3.Connection, db_path: Path, meta: dict[str, Any], passphrase: str
) -> _Keying:
    if meta.get("key_mode") == "file":
        raise VaultKeyError(
            f"vault {db_path} is sealed with a key file, not a passphrase; unset "
            "DARKMESH_VAULT_PASSPHRASE ([node] vault_passphrase) and set "
            "DARKMESH_VAULT_KEY_FILE to its key file"
        )
    if "key_check" not in meta:
        salt = vault_keys.new_salt()
        keying = _keying(vault_keys.derive_from_passphrase(passphrase, salt), 1, "passphrase",
                         None)
        _store_meta(conn, {"key_mode": "passphrase", "salt": salt, "key_version": "1",
                           "key_check": _seal_check(keying)})
        return keying
    version = int(meta["key_version"])
    keying = _keying(vault_keys.derive_from_passphrase(passphrase, bytes(meta["salt"])), version,
                     "passphrase", None)
    if not _check_opens(keying, bytes(meta["key_check"])):
        raise VaultKeyError(
            f"the vault passphrase does not open {db_path} (DARKMESH_VAULT_PASSPHRASE); "
            "check it, or restore the vault it belongs to"
        )
    return keying


def _open_with_key_file(
    conn: sqlite3.Connection, db_path: Path, meta: dict[str, Any], key_file: Path
) -> _Keying:
    if meta.get("key_mode") == "passphrase":
        raise VaultKeyError(
            f"vault {db_path} is sealed with a passphrase; set DARKMESH_VAULT_PASSPHRASE "
            "([node] vault_passphrase)"
        )
    staged = vault_keys.staged_path(key_file)
    if "key_check" not in meta:
        # A fresh vault. A key file may already exist (made by the operator, or by a run
        # that died before this commit): use it rather than orphan it.
        if key_file.exists():
            master, version = vault_keys.read_key_file(key_file)
        else:
            master, version = vault_keys.new_master_key(), 1
            vault_keys.write_key_file(key_file, master, version)
        keying = _keying(master, version, "file", key_file)
        _store_meta(conn, {"key_mode": "file", "key_version": str(version),
                           "key_check": _seal_check(keying)})
        return keying
    check = bytes(meta["key_check"])
    version = int(meta["key_version"])
    candidates = [p for p in (key_file, staged) if p.exists()]
    if not candidates:
        raise VaultKeyError(
            f"vault key file {key_file} is missing, but vault {db_path} holds sealed data; "
            "restore the key file (DARKMESH_VAULT_KEY_FILE, [node] vault_key_file)"
        )
    for candidate in candidates:
        master, file_version = vault_keys.read_key_file(candidate)
        if file_version != version:
            continue
        keying = _keying(master, version, "file", key_file)
        if _check_opens(keying, check):
            return keying
    raise VaultKeyError(
        f"vault key file {key_file} does not open vault {db_path} (wrong key: the vault "
        f"is at key version {version}); point DARKMESH_VAULT_KEY_FILE ([node] "
        "vault_key_file) at the key this vault was created with"
    )


def _finish_key_file(key_file: Path, keying: _Keying) -> None:
    """Tidy up after an interrupted rotation, once the vault opened."""
    staged = vault_keys.staged_path(key_file)
    if not staged.exists():
        return
    try:
        _, staged_version = vault_keys.read_key_file(staged)
    except VaultKeyError:
        staged.unlink(missing_ok=True)
        return
    live_version: int | None
    try:
        _, live_version = vault_keys.read_key_file(key_file)
    except VaultKeyError:
        live_version = None
    if staged_version == keying.version and live_version != keying.version:
        # The rotation committed but died before moving the new key into place.
        vault_keys.replace_key_file(key_file, staged)
        log.warning("finished an interrupted vault key rotation: %s now holds key version %d",
                    key_file, keying.version)
    else:
        staged.unlink(missing_ok=True)
