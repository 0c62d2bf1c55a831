"""The vault: the node's embedded encrypted store, its keys, and the upstream reader.

* :class:`~sdl_core.vault.store.VaultStore` — SQLite rows sealed with AES-GCM;
* :mod:`sdl_core.vault.keys` — key file (0600) or scrypt passphrase, rotation;
* :mod:`sdl_core.vault.fernet` — reads upstream v1 Fernet ``.enc`` datasets.
"""

from sdl_core.vault.fernet import UpstreamVaultError, read_upstream_dataset, upstream_datasets
from sdl_core.vault.keys import VaultKeyError
from sdl_core.vault.records import RecordError
from sdl_core.vault.store import VaultCorruptError, VaultStore

__all__ = [
    "RecordError",
    "UpstreamVaultError",
    "VaultCorruptError",
    "VaultKeyError",
    "VaultStore",
    "read_upstream_dataset",
    "upstream_datasets",
]
