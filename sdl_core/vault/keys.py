"""Where the vault's master key comes from: a key file (0600) or a passphrase (scrypt).

The master key never seals records itself. :func:`subkeys` derives two purpose-bound
keys from it with HKDF: one for AES-GCM sealing, one for the keyed hash that turns a
record key (an email) into the opaque lookup token stored in the database, so the
database file holds no plaintext identifier.

Key file format (one JSON object, so the version travels with the key)::

    {"format": "darkmesh-vault-key", "version": 1, "key": "<urlsafe base64 of 32 bytes>"}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sdl_core.errors import ConfigError, StartupError

KEY_BYTES = 32
KEY_FILE_FORMAT = "darkmesh-vault-key"

#: scrypt cost: ~32 MiB and ~0.1 s on a small machine; stored with the salt so it can
#: be raised later without breaking existing vaults.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


class VaultKeyError(StartupError):
    """The vault key is missing, unreadable, too exposed, or does not open the vault."""


@dataclass(frozen=True)
class Subkeys:
    """Purpose-bound keys derived from one master key."""

    seal: bytes
    index: bytes


def subkeys(master: bytes) -> Subkeys:
    """Derive the sealing key and the lookup-token key from ``master`` (HKDF-SHA256)."""

    def derive(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            master
        )

    return Subkeys(seal=derive(b"darkmesh-vault seal v1"), index=derive(b"darkmesh-vault index v1"))


def new_master_key() -> bytes:
    return os.urandom(KEY_BYTES)


# ----------------------------------------------------------------------- passphrase


def derive_from_passphrase(
    passphrase: str, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    """The master key for ``passphrase`` and the vault's stored ``salt`` (scrypt)."""
    if not passphrase:
        raise VaultKeyError("vault passphrase is empty (DARKMESH_VAULT_PASSPHRASE)")
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def new_salt() -> bytes:
    return os.urandom(16)


# ------------------------------------------------------------------------ key file


def check_private_file(path: Path) -> None:
    """Refuse a key file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise VaultKeyError(f"cannot read vault key file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultKeyError(
            f"vault key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )


def _encode_key_file(master: bytes, version: int) -> bytes:
    body = {
        "format": KEY_FILE_FORMAT,
        "version": version,
        "key": base64.urlsafe_b64encode(master).decode("ascii"),
    }
    return (json.dumps(body) + "\n").encode("ascii")


def read_key_file(path: Path) -> tuple[bytes, int]:
    """Return ``(master key, key version)`` from a key file, checking its mode first."""
    check_private_file(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise VaultKeyError(f"cannot read vault key file {path}: {exc.strerror}") from exc
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != KEY_FILE_FORMAT:
            raise ValueError("not a darkmesh vault key file")
        master = base64.urlsafe_b64decode(str(data["key"]).encode("ascii"))
        version = int(data["version"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise VaultKeyError(
            f"vault key file {path} is corrupt ({exc}); restore it from your backup"
        ) from exc
    if len(master) != KEY_BYTES:
        raise VaultKeyError(f"vault key file {path} holds a {len(master)}-byte key, not 32")
    return master, version


def write_key_file(path: Path, master: bytes, version: int) -> None:
    """Create ``path`` holding ``master``: mode 0600 from the start, never overwriting.

    The bytes go to a temporary file opened with ``O_CREAT|O_EXCL`` and mode 0600, are
    fsynced, then hard-linked to ``path`` (which fails if ``path`` exists), so a crash
    never leaves a half-written key file under the real name.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        tmp.unlink()  # left by a crashed process with our pid; it never held a live key
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_encode_key_file(master, version))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise ConfigError(f"vault key file {path} already exists; not overwriting") from exc
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def replace_key_file(path: Path, staged: Path) -> None:
    """Atomically move a staged key file over the live one (end of a rotation)."""
    os.replace(staged, path)
    _fsync_dir(path.parent)


def staged_path(path: Path) -> Path:
    """Where a rotation stages the next key before the vault commits to it."""
    return path.with_name(path.name + ".next")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_inside(child: Path, parent: Path) -> bool:
    """True when ``child`` lies inside ``parent`` (after resolving both)."""
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True
