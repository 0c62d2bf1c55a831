"""``darkmesh vault status | rotate-key`` through the CLI on a real vault."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdl_core.cli import main
from sdl_core.settings import NodeSettings
from sdl_core.vault.commands import open_for
from sdl_core.vault.keys import VaultKeyError


def _config(tmp_path: Path) -> tuple[Path, NodeSettings]:
    data, keys = tmp_path / "data", tmp_path / "keys"
    config = tmp_path / "darkmesh.toml"
    # A port nothing listens on, so the "node is running" guard sees a stopped node.
    config.write_text(
        "[node]\n"
        'node_id = "node_v"\n'
        "port = 1\n"
        f'data_dir = "{data}"\n'
        f'vault_key_file = "{keys / "vault.key"}"\n'
    )
    settings = NodeSettings(node_id="node_v", port=1, data_dir=data,
                            vault_key_file=keys / "vault.key")
    return config, settings


def _seed(settings: NodeSettings) -> None:
    async def write() -> None:
        store = open_for(settings)
        try:
            await store.upsert("contacts", [
                {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X"},
                {"name": "Jordan Ops", "email": "jordan@companyy.com", "org": "Company Y"},
            ])
        finally:
            await store.close()

    asyncio.run(write())


def _read(settings: NodeSettings) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        store = open_for(settings)
        try:
            return [r async for r in store.iterate("contacts")]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DARKMESH_CONFIG", "DARKMESH_NODE_ID", "DARKMESH_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("env")
def test_rotate_key_reseals_and_the_old_key_no_longer_opens(tmp_path: Path) -> None:
    config, settings = _config(tmp_path)
    _seed(settings)
    old_key = (tmp_path / "keys" / "vault.key").read_bytes()
    before = _read(settings)

    status = CliRunner().invoke(main, ["--config", str(config), "vault", "status"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["key_version"] == 1

    rotated = CliRunner().invoke(main, ["--config", str(config), "vault", "rotate-key"])
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.output)["key_version"] == 2
    assert (tmp_path / "keys" / "vault.key").read_bytes() != old_key
    assert (tmp_path / "keys" / "vault.key").stat().st_mode & 0o077 == 0
    assert _read(settings) == before

    # The previous key file no longer opens the vault.
    stale = tmp_path / "stale.key"
    stale.write_bytes(old_key)
    stale.chmod(0o600)
    with pytest.raises(VaultKeyError):
        _read(settings.model_copy(update={"vault_key_file": stale}))


@pytest.mark.usefixtures("env")
def test_status_names_the_problem_when_the_key_is_missing(tmp_path: Path) -> None:
    config, settings = _config(tmp_path)
    _seed(settings)
    (tmp_path / "keys" / "vault.key").unlink()
    result = CliRunner().invoke(main, ["--config", str(config), "vault", "status"])
    assert result.exit_code != 0
    assert "vault.key" in result.output
