"""The vault and the memory store: the store contract, encryption, keys, rotation."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sdl_core import Host, make_plugin_manager
from sdl_core.default_plugins.memory_store import MemoryStore
from sdl_core.testing.store_contract import StoreContract
from sdl_core.vault import VaultCorruptError, VaultKeyError, VaultStore
from sdl_core.vault import keys as vault_keys

SECRET_EMAIL = "casey.secret@connector.example"


async def collect(store: VaultStore, dataset: str) -> list[dict[str, object]]:
    return [r async for r in store.iterate(dataset)]


def contacts(n: int, prefix: str = "user") -> list[dict[str, object]]:
    return [{"name": f"{prefix} {i}", "email": f"{prefix}{i}@example.com", "org": "Org",
             "role": "Role", "strength": 0.5} for i in range(n)]


class TestVaultContract(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[VaultStore]:
        vault = VaultStore.open(tmp_path / "data" / "vault.db",
                                key_file=tmp_path / "keys" / "node.vault.key")
        yield vault
        await vault.close()


class TestPassphraseVaultContract(StoreContract):
    large_batch_size = 5_000

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[VaultStore]:
        vault = VaultStore.open(tmp_path / "vault.db", passphrase="correct horse")
        yield vault
        await vault.close()


class TestMemoryStoreContract(StoreContract):
    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        memory = MemoryStore()
        yield memory
        await memory.close()


# ------------------------------------------------------------------ encryption


@pytest.mark.asyncio
async def test_database_file_holds_no_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "data" / "vault.db"
    vault = VaultStore.open(db, key_file=tmp_path / "keys" / "k")
    await vault.upsert("contacts", [{"name": "Casey Secretname", "email": SECRET_EMAIL,
                                     "org": "Hidden Org LLC", "role": "Advisor"}])
    await vault.upsert("interactions", [{"email": SECRET_EMAIL, "strength": 0.92}])
    await vault.close()
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    for needle in (SECRET_EMAIL, "Casey Secretname", "Hidden Org LLC", "connector.example"):
        assert needle.encode() not in raw
        assert needle.encode("utf-16-le") not in raw
    # Each row is sealed with its own nonce: the same plaintext never repeats.
    conn = sqlite3.connect(db)
    sealed = [row[0] for row in conn.execute("SELECT sealed FROM vault_records")]
    conn.close()
    assert len({s[:12] for s in sealed}) == len(sealed) == 2


@pytest.mark.asyncio
async def test_reopen_with_same_key_reads_everything(tmp_path: Path) -> None:
    db, key = tmp_path / "vault.db", tmp_path / "keys" / "k"
    vault = VaultStore.open(db, key_file=key)
    await vault.upsert("contacts", contacts(50))
    marker = await vault.changed_marker("contacts")
    await vault.close()
    again = VaultStore.open(db, key_file=key)
    assert await collect(again, "contacts") == contacts(50)
    assert await again.count("contacts") == 50
    assert await again.changed_marker("contacts") == marker
    await again.close()


@pytest.mark.asyncio
async def test_row_moved_to_another_key_fails_authentication(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    vault = VaultStore.open(db, key_file=tmp_path / "k")
    await vault.upsert("contacts", contacts(2))
    await vault.close()
    conn = sqlite3.connect(db, isolation_level=None)
    rows = conn.execute("SELECT position, sealed FROM vault_records ORDER BY position").fetchall()
    # Swap the two ciphertexts: each is bound to its own token, so both must fail.
    conn.execute("UPDATE vault_records SET sealed=? WHERE position=?", (rows[1][1], rows[0][0]))
    conn.close()
    vault = VaultStore.open(db, key_file=tmp_path / "k")
    with pytest.raises(VaultCorruptError, match="failed authentication"):
        await collect(vault, "contacts")
    await vault.close()


# ------------------------------------------------------------------------ keys


def test_key_file_created_0600_outside_data_dir(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "node_a.vault.key"
    vault = VaultStore.open(tmp_path / "data" / "vault.db", key_file=key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    body = json.loads(key.read_text())
    assert body["format"] == "darkmesh-vault-key" and body["version"] == 1
    assert vault.status()["key_source"] == f"file:{key}"
    assert not list(key.parent.glob(".*tmp"))


def test_group_readable_key_file_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    VaultStore.open(tmp_path / "vault.db", key_file=key)
    os.chmod(key, 0o640)
    with pytest.raises(VaultKeyError, match=f"run chmod 600 {key}"):
        VaultStore.open(tmp_path / "vault.db", key_file=key)


@pytest.mark.asyncio
async def test_wrong_key_file_refused_with_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    vault = VaultStore.open(db, key_file=tmp_path / "right.key")
    await vault.upsert("contacts", contacts(3))
    await vault.close()
    other = tmp_path / "other.key"
    VaultStore.open(tmp_path / "other.db", key_file=other)  # another vault's key
    with pytest.raises(VaultKeyError, match=r"other\.key does not open vault .*wrong key"):
        VaultStore.open(db, key_file=other)


def test_missing_key_file_for_existing_vault_is_not_recreated(tmp_path: Path) -> None:
    db, key = tmp_path / "vault.db", tmp_path / "k"
    VaultStore.open(db, key_file=key)
    key.unlink()
    with pytest.raises(VaultKeyError, match=r"is missing.*restore the key file"):
        VaultStore.open(db, key_file=key)
    assert not key.exists()


def test_corrupt_key_file(tmp_path: Path) -> None:
    key = tmp_path / "k"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"not json")
    os.close(fd)
    with pytest.raises(VaultKeyError, match="is corrupt"):
        VaultStore.open(tmp_path / "vault.db", key_file=key)


def test_write_key_file_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "k"
    vault_keys.write_key_file(key, b"\x01" * 32, 1)
    with pytest.raises(Exception, match="already exists"):
        vault_keys.write_key_file(key, b"\x02" * 32, 1)
    assert vault_keys.read_key_file(key) == (b"\x01" * 32, 1)


@pytest.mark.asyncio
async def test_passphrase_vault(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    vault = VaultStore.open(db, passphrase="correct horse battery staple")
    await vault.upsert("contacts", contacts(5))
    assert vault.status()["key_source"] == "passphrase"
    await vault.close()
    conn = sqlite3.connect(db)
    salt = conn.execute("SELECT value FROM vault_meta WHERE name='salt'").fetchone()[0]
    conn.close()
    assert len(salt) == 16
    again = VaultStore.open(db, passphrase="correct horse battery staple")
    assert await collect(again, "contacts") == contacts(5)
    await again.close()
    with pytest.raises(VaultKeyError, match="passphrase does not open"):
        VaultStore.open(db, passphrase="wrong horse")
    with pytest.raises(VaultKeyError, match="sealed with a passphrase"):
        VaultStore.open(db, key_file=tmp_path / "k")


def test_key_file_vault_refuses_passphrase(tmp_path: Path) -> None:
    VaultStore.open(tmp_path / "vault.db", key_file=tmp_path / "k")
    with pytest.raises(VaultKeyError, match="sealed with a key file"):
        VaultStore.open(tmp_path / "vault.db", passphrase="pw")


# -------------------------------------------------------------------- rotation


@pytest.mark.asyncio
async def test_rotation_reseals_everything_and_keeps_order(tmp_path: Path) -> None:
    db, key = tmp_path / "vault.db", tmp_path / "keys" / "k"
    vault = VaultStore.open(db, key_file=key)
    await vault.upsert("contacts", contacts(3000))
    await vault.upsert("interactions", [{"email": "user7@example.com", "strength": 0.9}])
    old_key = key.read_bytes()
    conn = sqlite3.connect(db)
    old_rows = dict(conn.execute("SELECT position, sealed FROM vault_records").fetchall())
    assert await vault.rotate_key() == 2
    new_rows = dict(conn.execute("SELECT position, sealed FROM vault_records").fetchall())
    versions = {v for (v,) in conn.execute("SELECT DISTINCT key_version FROM vault_records")}
    conn.close()
    assert versions == {2}
    assert set(new_rows) == set(old_rows)
    assert all(new_rows[p] != old_rows[p] for p in old_rows)
    assert key.read_bytes() != old_key and json.loads(key.read_text())["version"] == 2
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not vault_keys.staged_path(key).exists()
    # Upserts after rotation still find the re-keyed rows.
    await vault.upsert("contacts", [{"email": "USER0@example.com", "name": "renamed"}])
    assert await vault.count("contacts") == 3000
    await vault.close()
    again = VaultStore.open(db, key_file=key)
    records = await collect(again, "contacts")
    assert records[0] == {"email": "USER0@example.com", "name": "renamed"}
    assert records[1:] == contacts(3000)[1:]
    assert again.status()["key_version"] == 2
    await again.close()
    # The old key no longer opens the vault.
    old = tmp_path / "old.key"
    fd = os.open(old, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, old_key)
    os.close(fd)
    with pytest.raises(VaultKeyError, match="key version 2"):
        VaultStore.open(db, key_file=old)


@pytest.mark.asyncio
async def test_interrupted_rotation_is_finished_on_open(tmp_path: Path) -> None:
    """A crash after the commit but before the key file moved: the staged key wins."""
    db, key = tmp_path / "vault.db", tmp_path / "k"
    vault = VaultStore.open(db, key_file=key)
    await vault.upsert("contacts", contacts(10))
    staged = vault_keys.staged_path(key)
    real_replace = vault_keys.replace_key_file
    vault_keys.replace_key_file = lambda path, stage: None  # type: ignore[assignment]
    try:
        await vault.rotate_key()
    finally:
        vault_keys.replace_key_file = real_replace
    await vault.close()
    assert staged.exists() and json.loads(key.read_text())["version"] == 1
    again = VaultStore.open(db, key_file=key)
    assert not staged.exists() and json.loads(key.read_text())["version"] == 2
    assert await collect(again, "contacts") == contacts(10)
    await again.close()


@pytest.mark.asyncio
async def test_stale_staged_key_is_discarded(tmp_path: Path) -> None:
    """A crash before the commit: the live key still opens the vault; the stage goes."""
    db, key = tmp_path / "vault.db", tmp_path / "k"
    VaultStore.open(db, key_file=key)
    vault_keys.write_key_file(vault_keys.staged_path(key), os.urandom(32), 2)
    vault = VaultStore.open(db, key_file=key)
    assert not vault_keys.staged_path(key).exists()
    assert vault.key_version == 1
    await vault.close()


@pytest.mark.asyncio
async def test_passphrase_rotation(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    vault = VaultStore.open(db, passphrase="one")
    await vault.upsert("contacts", contacts(20))
    with pytest.raises(VaultKeyError, match="needs the new passphrase"):
        await vault.rotate_key()
    assert await vault.rotate_key(new_passphrase="two") == 2
    await vault.close()
    with pytest.raises(VaultKeyError, match="passphrase does not open"):
        VaultStore.open(db, passphrase="one")
    again = VaultStore.open(db, passphrase="two")
    assert await collect(again, "contacts") == contacts(20)
    await again.close()


# --------------------------------------------------------- costs and plugin


@pytest.mark.asyncio
async def test_ingest_does_not_rewrite_the_vault(tmp_path: Path) -> None:
    """Rows written earlier are untouched by later batches (no full rewrite)."""
    db = tmp_path / "vault.db"
    vault = VaultStore.open(db, key_file=tmp_path / "k")
    await vault.upsert("contacts", contacts(2000, "old"))
    conn = sqlite3.connect(db)
    before = conn.execute("SELECT position, sealed FROM vault_records").fetchall()
    await vault.upsert("contacts", contacts(100, "new"))
    after = dict(conn.execute("SELECT position, sealed FROM vault_records").fetchall())
    conn.close()
    assert all(after[p] == s for p, s in before)
    assert len(after) == 2100
    await vault.close()


@pytest.mark.asyncio
async def test_closed_vault_refuses_calls(tmp_path: Path) -> None:
    vault = VaultStore.open(tmp_path / "vault.db", key_file=tmp_path / "k")
    await vault.close()
    with pytest.raises(Exception, match="is closed"):
        await vault.count("contacts")


def test_builtin_store_plugins_are_installed() -> None:
    pm = make_plugin_manager(only={"darkmesh-sdl.vault", "darkmesh-sdl.memory-store"})
    names = {spec.name for spec in Host(pm, _settings(Path("unused"))).hooks.stores()}
    assert names == {"vault", "memory"}


def _settings(base: Path, **extra: object):  # type: ignore[no-untyped-def]
    from sdl_core.settings import NodeSettings, load_settings

    return load_settings(NodeSettings, {}, overrides={"node_id": "node_a",
                                                     "data_dir": base / "data", **extra})


@pytest.mark.asyncio
async def test_vault_plugin_factory_uses_node_settings(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pm = make_plugin_manager(only={"darkmesh-sdl.vault"})
    host = Host(pm, _settings(tmp_path))
    (spec,) = host.hooks.stores()
    store = host.build(spec, "darkmesh_register_stores")
    assert isinstance(store, VaultStore)
    assert store.path == tmp_path / "data" / "vault.db"
    assert (tmp_path / "keys" / "node_a.vault.key").exists()
    await store.upsert("contacts", contacts(2))
    status = store.status()
    assert status == {"store": "vault", "path": str(tmp_path / "data" / "vault.db"),
                      "key_source": "file:keys/node_a.vault.key", "key_version": 1,
                      "datasets": {"contacts": 2}}
    await store.close()
    host = Host(pm, _settings(tmp_path, vault_passphrase="pw", data_dir=tmp_path / "d2"))
    store = host.build(spec, "darkmesh_register_stores")
    assert store.status()["key_source"] == "passphrase"
    await store.close()


@pytest.mark.asyncio
async def test_writes_racing_a_rotation_stay_readable(tmp_path: Path) -> None:
    db, key = tmp_path / "vault.db", tmp_path / "k"
    vault = VaultStore.open(db, key_file=key)
    await vault.upsert("contacts", contacts(2000, "base"))
    batches = [contacts(300, f"b{n}-") for n in range(6)]
    await asyncio.gather(vault.rotate_key(), *(vault.upsert("contacts", b) for b in batches),
                         vault.rotate_key())
    assert vault.key_version == 3
    await vault.close()
    again = VaultStore.open(db, key_file=key)
    records = await collect(again, "contacts")
    assert len(records) == await again.count("contacts") == 2000 + 6 * 300
    assert records[:2000] == contacts(2000, "base")
    await again.close()
