"""Built-in store ``vault``: SQLite with every record sealed by AES-GCM (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdl_core.plugins import hookimpl
from sdl_core.specs import StoreSpec
from sdl_core.vault.store import VaultStore

VAULT_FILE_NAME = "vault.db"


def open_vault(host: Any, settings: Any) -> VaultStore:
    """Open ``<data_dir>/vault.db`` with the node's key file or passphrase."""
    node = host.settings
    passphrase = node.vault_passphrase.get_secret_value()
    return VaultStore.open(
        Path(node.data_dir) / VAULT_FILE_NAME,
        key_file=node.vault_key_file,
        passphrase=passphrase or None,
    )


@hookimpl(trylast=True)
def darkmesh_register_stores() -> Iterator[StoreSpec]:
    yield StoreSpec(
        name="vault",
        factory=open_vault,
        description="Encrypted local vault: SQLite, each record sealed with AES-GCM; key file "
        "(0600, outside data_dir) or scrypt passphrase",
    )
