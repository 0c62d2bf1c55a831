"""The trust registry (``aauth.md`` §3): public keys, pinned subs, capabilities.

Hot reload: before each verification the file is stat-ed; on any change it is re-read,
validated as a whole and swapped in. A malformed edit keeps the last good snapshot (one
log line per distinct content) and shows as ``last_error``; a deleted file empties the
registry (fail closed). Writers go through :func:`write_registry` (temporary file, fsync,
rename, fsync of the directory, mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darkmesh_aauth.keys import (
    JWKError,
    fsync_dir,
    has_private_members,
    key_kind,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
)

log = logging.getLogger("darkmesh.aauth.registry")

ANY_ISSUER = "*"
#: The issuer a new entry pins when none is given (the signer's default ``iss``).
DEFAULT_ISS = "https://darkmesh.local"


class RegistryError(ValueError):
    """The registry file is unusable; the message names the entry index and field."""


@dataclass(frozen=True, kw_only=True)
class TrustEntry:
    """One trusted agent key."""

    thumbprint: str
    sub: str
    iss: str | None  # None: any issuer
    public_jwk: Mapping[str, Any]
    capabilities: frozenset[str]
    label: str
    raw: Mapping[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    entries: tuple[TrustEntry, ...] = ()
    by_thumbprint: Mapping[str, TrustEntry] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Sequence[TrustEntry], warnings: Sequence[str] = (),
           document: Mapping[str, Any] | None = None) -> Snapshot:
        return cls(entries=tuple(entries), by_thumbprint={e.thumbprint: e for e in entries},
                   warnings=tuple(warnings), document=dict(document or {}))


# ---------------------------------------------------------------- validation


def _entry(index: int, item: Any, known: frozenset[str] | None,
           warnings: list[str]) -> TrustEntry:
    where = f"agents[{index}]"
    if not isinstance(item, dict):
        raise RegistryError(f"{where}: must be an object")
    jwk = item.get("public_jwk")
    if not isinstance(jwk, dict):
        raise RegistryError(f"{where}.public_jwk: required, a JSON object")
    if has_private_members(jwk):
        raise RegistryError(f"{where}.public_jwk: contains private key material; "
                            "store only the public key")
    kind = key_kind(jwk)
    if kind is None:
        raise RegistryError(f"{where}.public_jwk: unsupported key kty={jwk.get('kty')!r} "
                            f"crv={jwk.get('crv')!r}; use OKP/Ed25519 or EC/P-256")
    try:
        public_key_from_jwk(jwk)
    except JWKError as exc:
        raise RegistryError(f"{where}.public_jwk: {exc}") from None
    alg = jwk.get("alg")
    if alg == "EdDSA" and kind == "Ed25519":
        warnings.append(f"{where}.public_jwk: alg 'EdDSA' is upstream's; read as 'Ed25519'")
    elif alg is not None and alg != kind:
        raise RegistryError(f"{where}.public_jwk.alg: {alg!r} does not fit a {kind} key")
    declared = item.get("thumbprint")
    if not isinstance(declared, str) or not declared:
        raise RegistryError(f"{where}.thumbprint: required, a non-empty string")
    computed = thumbprint(jwk)
    if declared != computed:
        raise RegistryError(f"{where}.thumbprint: {declared!r} does not match the RFC 7638 "
                            f"thumbprint of public_jwk ({computed!r})")
    sub = item.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise RegistryError(f"{where}.sub: required, a non-empty string (it decides identity)")
    iss = item.get("iss")
    if iss is not None and not isinstance(iss, str):
        raise RegistryError(f"{where}.iss: must be a string")
    label = item.get("label")
    if label is not None and not isinstance(label, str):
        raise RegistryError(f"{where}.label: must be a string")
    raw_caps = item.get("capabilities", [])
    if not isinstance(raw_caps, list) or not all(isinstance(c, str) for c in raw_caps):
        raise RegistryError(f"{where}.capabilities: must be a list of strings")
    capabilities = frozenset(c.strip() for c in raw_caps if c.strip())
    if known is not None:
        for name in sorted(capabilities - known - {"*"}):
            warnings.append(f"{where}.capabilities: unknown capability {name!r} (kept)")
    return TrustEntry(
        thumbprint=computed, sub=sub, iss=None if iss in (None, "", ANY_ISSUER) else iss,
        public_jwk=public_jwk(jwk) | {"alg": kind}, capabilities=capabilities,
        label=label or sub, raw=item,
    )


def parse_registry(data: Any, known_capabilities: Iterable[str] | None = None) -> Snapshot:
    """Validate a registry document as a whole.

    :raises RegistryError: on the first violation, naming the entry index and field.
    """
    if not isinstance(data, dict):
        raise RegistryError("root: must be a JSON object with an 'agents' array")
    version = data.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise RegistryError(f"version: must be 1 (got {version!r})")
    agents = data.get("agents")
    if not isinstance(agents, list):
        raise RegistryError("agents: required, a JSON array")
    known = frozenset(known_capabilities) if known_capabilities is not None else None
    warnings: list[str] = []
    entries: list[TrustEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(agents):
        entry = _entry(index, item, known, warnings)
        if entry.thumbprint in seen:
            raise RegistryError(f"agents[{index}].thumbprint: duplicate of "
                                f"agents[{seen[entry.thumbprint]}]")
        seen[entry.thumbprint] = index
        entries.append(entry)
    return Snapshot.of(entries, warnings, data)


def check_registry_mode(path: Path, mode: int) -> None:
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RegistryError(f"{path} is writable by group or others "
                            f"(mode {stat.S_IMODE(mode):o}); run chmod 600 {path}")


def read_registry(path: Path, known_capabilities: Iterable[str] | None = None) -> Snapshot:
    """Read and validate one registry file (permissions included)."""
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{path} does not exist") from None
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
    check_registry_mode(path, st.st_mode)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} is not valid JSON: {exc}") from None
    return parse_registry(data, known_capabilities)


# ------------------------------------------------------------------ hot reload


class TrustRegistry:
    """A registry file, re-validated whenever its stat signature changes."""

    def __init__(self, path: Path | None, *, known_capabilities: Iterable[str] | None = None,
                 clock: Any = time.time) -> None:
        self.path = Path(path) if path is not None else None
        self.known = frozenset(known_capabilities) if known_capabilities is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._signature: tuple[int, ...] | None = None
        self._loaded_at: float | None = None
        self._last_error: str | None = None
        self._logged: set[str] = set()
        self.refresh()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def __len__(self) -> int:
        return len(self._snapshot.entries)

    def refresh(self) -> Snapshot:
        """Swap in the file's content if it changed since the last look; return the snapshot."""
        if self.path is None:
            return self._snapshot
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            with self._lock:
                if self._signature != ():
                    self._signature = ()
                    self._snapshot = Snapshot()
                    self._set_error(f"{self.path} does not exist", key="missing")
            return self._snapshot
        except OSError as exc:
            with self._lock:
                self._set_error(f"cannot stat {self.path}: {exc.strerror}", key="stat")
            return self._snapshot
        signature = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode, st.st_ctime_ns)
        if signature == self._signature:
            return self._snapshot
        with self._lock:
            if signature == self._signature:
                return self._snapshot
            self._signature = signature
            raw = b""
            try:
                raw = self.path.read_bytes()
                check_registry_mode(self.path, st.st_mode)
                try:
                    data = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise RegistryError(f"{self.path} is not valid JSON: {exc}") from None
                snapshot = parse_registry(data, self.known)
            except (RegistryError, OSError) as exc:
                digest = hashlib.sha256(raw).hexdigest()
                self._set_error(f"{exc}; keeping the last good registry "
                                f"({len(self._snapshot.entries)} entries)", key=digest)
                return self._snapshot
            self._snapshot = snapshot
            self._loaded_at = self._clock()
            self._last_error = None
            for warning in snapshot.warnings:
                log.warning("trust registry %s: %s", self.path, warning)
            log.info("trust registry %s loaded: %d entries", self.path, len(snapshot.entries))
            return snapshot

    def _set_error(self, message: str, *, key: str) -> None:
        self._last_error = message
        if key + message not in self._logged:  # once per distinct content
            self._logged.add(key + message)
            log.error("trust registry: %s", message)

    def lookup(self, thumbprint_value: str) -> TrustEntry | None:
        return self._snapshot.by_thumbprint.get(thumbprint_value)

    def status(self) -> dict[str, Any]:
        """``{path, entries, loaded_at, last_error}`` for ``darkmesh status``."""
        loaded = self._loaded_at
        return {
            "path": str(self.path) if self.path is not None else None,
            "entries": len(self._snapshot.entries),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded))
            if loaded is not None else None,
            "last_error": self._last_error,
            "warnings": list(self._snapshot.warnings),
        }


# ---------------------------------------------------------------------- writes


def write_registry(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically: temporary file (0600), fsync, rename, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def entry_document(*, public: Mapping[str, Any], sub: str, iss: str | None,
                   capabilities: Sequence[str], label: str | None) -> dict[str, Any]:
    """The JSON of a new registry entry, in the spec's field order."""
    doc: dict[str, Any] = {}
    if label:
        doc["label"] = label
    doc["thumbprint"] = thumbprint(public)
    doc["sub"] = sub
    if iss is not None:
        doc["iss"] = iss
    doc["public_jwk"] = public_jwk(public)
    doc["capabilities"] = list(capabilities)
    return doc


# ----------------------------------------------------------------------- edits
# One set of rules for every editor of a registry file (``darkmesh trust`` and the
# dashboard's trust panel): idempotent by thumbprint, the whole result validated.


def editable_document(path: Path, known_capabilities: Iterable[str]) -> dict[str, Any]:
    """The registry at ``path`` as a document to edit (an empty one when it is absent).

    :raises RegistryError: the file is invalid: refuse to change it.
    """
    if not path.exists():
        return {"version": 1, "agents": []}
    document = dict(read_registry(path, known_capabilities).document)
    document["agents"] = list(document.get("agents", []))
    return document


def upsert_entry(
    document: dict[str, Any], known_capabilities: Iterable[str], *,
    public: Mapping[str, Any], sub: str, iss: str | None = None,
    capabilities: Sequence[str] | None = None, label: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Append or update the entry of ``public`` in ``document``; ``(action, entry)``.

    ``action`` is ``append``, ``update`` or ``noop`` (the same entry is there already). A
    field given as None keeps the existing entry's value (a new entry: ``DEFAULT_ISS``, no
    capabilities, no label).

    :raises RegistryError: the edited document would be invalid (it is then unchanged).
    """
    agents: list[dict[str, Any]] = document["agents"]
    tp = thumbprint(public)
    index = next((i for i, a in enumerate(agents) if a.get("thumbprint") == tp), None)
    existing = agents[index] if index is not None else {}
    entry = entry_document(
        public=public, sub=sub,
        iss=iss if iss is not None else existing.get("iss", DEFAULT_ISS),
        capabilities=capabilities if capabilities is not None else list(
            existing.get("capabilities", [])),
        label=label if label is not None else existing.get("label"),
    )
    if index is None:
        edited, action = [*agents, entry], "append"
    elif _same_entry(existing, entry):
        return "noop", entry
    else:
        edited, action = [*agents[:index], entry, *agents[index + 1:]], "update"
    parse_registry({**document, "agents": edited}, known_capabilities)
    document["agents"] = edited
    return action, entry


def remove_entries(document: dict[str, Any], *, thumbprint_value: str | None = None,
                   sub: str | None = None) -> list[dict[str, Any]]:
    """Drop the entries of one thumbprint or of one sub from ``document``; those removed."""
    def hit(agent: dict[str, Any]) -> bool:
        if thumbprint_value is not None:
            return bool(agent.get("thumbprint") == thumbprint_value)
        return bool(agent.get("sub") == sub)

    removed = [a for a in document["agents"] if hit(a)]
    document["agents"] = [a for a in document["agents"] if not hit(a)]
    return removed


def _same_entry(existing: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    def normal(entry: Mapping[str, Any]) -> tuple[Any, ...]:
        jwk = entry.get("public_jwk") or {}
        return (entry.get("sub"), entry.get("iss"), entry.get("label"),
                list(entry.get("capabilities") or []),
                json.dumps(public_jwk(jwk) if isinstance(jwk, dict) and jwk else jwk,
                           sort_keys=True))
    try:
        return normal(existing) == normal(new)
    except (KeyError, TypeError):
        return False
