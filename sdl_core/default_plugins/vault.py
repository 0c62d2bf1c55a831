"""Built-in store ``vault``: SQLite with every record sealed by AES-GCM (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sdl_core.plugins import hookimpl
from sdl_core.specs import CommandSpec, StoreSpec
from sdl_core.vault.commands import VAULT_FILE_NAME, open_for, vault_group
from sdl_core.vault.store import VaultStore

__all__ = ["VAULT_FILE_NAME", "open_vault"]


def open_vault(host: Any, settings: Any) -> VaultStore:
    """Open ``<data_dir>/vault.db`` with the node's key file or passphrase."""
    return open_for(host.settings)


@hookimpl(trylast=True)
def darkmesh_register_stores() -> Iterator[StoreSpec]:
    yield StoreSpec(
        name="vault",
        factory=open_vault,
        description="Encrypted local vault: SQLite, each record sealed with AES-GCM; key file "
        "(0600, outside data_dir) or scrypt passphrase",
    )


@hookimpl(trylast=True)
def darkmesh_register_commands() -> Iterator[CommandSpec]:
    yield CommandSpec(
        name="vault",
        command=vault_group,
        description="vault status and key rotation",
    )
