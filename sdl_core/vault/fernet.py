"""Reader for upstream Darkmesh v1 vaults (Fernet ``.enc`` datasets).

Upstream v1 stored each dataset as ``<vault_path>/<dataset>.enc``: the Fernet token
of the JSON list of its records, with the key in ``<vault_path>/vault.key`` (a
urlsafe-base64 Fernet key). Only ``darkmesh init --from-upstream`` reads these; the
running node uses :class:`sdl_core.vault.store.VaultStore`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from sdl_core.errors import ConfigError

KEY_FILE_NAME = "vault.key"
SUFFIX = ".enc"


class UpstreamVaultError(ConfigError):
    """An upstream vault directory, key or dataset file cannot be read."""


def load_fernet(vault_path: str | Path) -> Fernet:
    """The Fernet of an upstream vault, from ``<vault_path>/vault.key``."""
    key_path = Path(vault_path) / KEY_FILE_NAME
    try:
        raw = key_path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise UpstreamVaultError(
            f"upstream vault key {key_path} not found; vault_path must be the upstream "
            "vault directory holding vault.key and the .enc files"
        ) from exc
    except OSError as exc:
        raise UpstreamVaultError(
            f"cannot read upstream vault key {key_path}: {exc.strerror}"
        ) from exc
    try:
        return Fernet(raw)
    except ValueError as exc:
        raise UpstreamVaultError(
            f"upstream vault key {key_path} is not a Fernet key (32 bytes, urlsafe base64)"
        ) from exc


def upstream_datasets(vault_path: str | Path) -> list[str]:
    """Dataset names with an ``.enc`` file, sorted (``contacts``, ``interactions``, …)."""
    directory = Path(vault_path)
    if not directory.is_dir():
        raise UpstreamVaultError(f"upstream vault directory {directory} does not exist")
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}")
                  if p.is_file() and len(p.name) > len(SUFFIX))


def read_upstream_dataset(
    vault_path: str | Path, dataset: str, fernet: Fernet | None = None
) -> list[dict[str, Any]]:
    """Decrypt and parse ``<vault_path>/<dataset>.enc``; a missing file is an empty list.

    :raises UpstreamVaultError: wrong key, corrupt file, or content that is not a JSON
        list of objects — naming the file.
    """
    path = Path(vault_path) / f"{dataset}{SUFFIX}"
    if not path.exists():
        return []
    fernet = fernet or load_fernet(vault_path)
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise UpstreamVaultError(f"cannot read upstream dataset {path}: {exc.strerror}") from exc
    if not token:
        return []
    try:
        plain = fernet.decrypt(token)
    except InvalidToken as exc:
        raise UpstreamVaultError(
            f"cannot decrypt upstream dataset {path} with {Path(vault_path) / KEY_FILE_NAME}: "
            "wrong key or corrupt file"
        ) from exc
    try:
        value = json.loads(plain)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpstreamVaultError(f"upstream dataset {path} does not hold JSON: {exc}") from exc
    if not isinstance(value, list):
        raise UpstreamVaultError(
            f"upstream dataset {path} holds a JSON {type(value).__name__}, not a list of records"
        )
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise UpstreamVaultError(
                f"upstream dataset {path}: record #{index} is a {type(record).__name__}, "
                "not an object"
            )
    return value
