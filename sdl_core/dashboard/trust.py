"""The trust-registry panel: list, add (pasted public JWK or a peer URL) and revoke.

The registry belongs to ``darkmesh-aauth``; this module uses only that plugin's public
functions, the ones ``darkmesh trust add|remove`` use (the registry's edit functions,
validation of the whole document, atomic 0600 writes, the capped same-origin fetch of
``--from-url``), imported when the plugin is installed. So edits follow the CLI's rules:
idempotent by thumbprint (``noop``, ``update``, ``append``; a field left empty keeps the
entry's value), capability names the node does not declare are refused, and a key read
from a URL is written only after the operator confirmed its thumbprint.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdl_core.host import Host

AAUTH_PACKAGE = "darkmesh_aauth"
MAX_JWK_CHARS = 8 * 1024


class TrustError(Exception):
    """An edit the registry refuses; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class PeerPreview:
    """What ``--from-url`` shows before the operator confirms."""

    url: str
    node_id: str
    thumbprint: str
    sub: str


def _module(name: str) -> Any:
    return importlib.import_module(f"{AAUTH_PACKAGE}.{name}")


def aauth_installed() -> bool:
    return importlib.util.find_spec(AAUTH_PACKAGE) is not None


class TrustPanel:
    """The registry of this node's verifier, when darkmesh-aauth runs here."""

    def __init__(self, host: Host) -> None:
        self.host = host

    # ----------------------------------------------------------------- state

    def unavailable_reason(self) -> str | None:
        """Why the panel cannot edit a registry, or None when it can."""
        if not aauth_installed():
            return "AAuth not installed (pip install darkmesh-aauth)"
        registry = getattr(self.host.verifier, "registry", None)
        if registry is None:
            return (f"AAuth verifier not active (auth mode {self.host.settings.auth_mode}); "
                    "set DARKMESH_AUTH_MODE=either or aauth")
        if getattr(registry, "path", None) is None:
            return "no trust registry configured: set DARKMESH_TRUSTED_AGENTS_FILE"
        return None

    @property
    def path(self) -> Path:
        return Path(self.host.verifier.registry.path)  # type: ignore[union-attr]

    def listing(self) -> dict[str, Any]:
        """Entries and registry health, as ``darkmesh trust list`` prints them."""
        registry = self.host.verifier.registry  # type: ignore[union-attr]
        registry.refresh()
        status = registry.status()
        entries = [
            {"label": e.label, "thumbprint": e.thumbprint, "sub": e.sub, "iss": e.iss or "*",
             "capabilities": sorted(e.capabilities), "alg": e.public_jwk.get("alg")}
            for e in registry.snapshot.entries
        ]
        return {"path": status["path"], "entries": entries, "loaded_at": status["loaded_at"],
                "last_error": status["last_error"]}

    # ----------------------------------------------------------------- edits

    def capabilities(self, raw: str) -> list[str]:
        names = [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]
        known = self.host.capability_names()
        unknown = [n for n in names if n != "*" and n not in known]
        if unknown:
            raise TrustError(f"unknown capabilities: {', '.join(unknown)}; choose from: "
                             f"{', '.join(sorted(known))} (or *)")
        return list(dict.fromkeys(names))

    def parse_public_jwk(self, text: str) -> dict[str, Any]:
        """A pasted public JWK (or a JWKS with one key), refusing private material."""
        keys = _module("keys")
        if len(text) > MAX_JWK_CHARS:
            raise TrustError(f"the pasted key is longer than {MAX_JWK_CHARS} characters")
        try:
            value = json.loads(text)
        except ValueError:
            raise TrustError("the pasted key is not JSON (paste the .public.jwk file)") from None
        if isinstance(value, dict) and isinstance(value.get("keys"), list):
            if len(value["keys"]) != 1:
                raise TrustError("the pasted JWKS must hold exactly one key")
            value = value["keys"][0]
        if not isinstance(value, dict):
            raise TrustError("the pasted key must be a JSON object (a JWK)")
        if keys.has_private_members(value):
            raise TrustError("the pasted key contains private key material; paste only the "
                             "public key (.public.jwk)")
        if keys.key_kind(value) is None:
            raise TrustError("unsupported key: use OKP/Ed25519 or EC/P-256")
        try:
            keys.public_key_from_jwk(value)
        except keys.JWKError as exc:
            raise TrustError(f"invalid key: {exc}") from None
        return dict(keys.public_jwk(value))

    def thumbprint(self, public: dict[str, Any]) -> str:
        return str(_module("keys").thumbprint(public))

    async def add(self, *, public: dict[str, Any], sub: str, iss: str | None,
                  capabilities: list[str], label: str | None) -> dict[str, Any]:
        """Append or update the entry of ``public`` (idempotent by thumbprint)."""
        if not sub.strip():
            raise TrustError("sub is required (e.g. darkmesh-node@<node_id>)")
        return await asyncio.to_thread(self._add, public, sub.strip(), iss, capabilities, label)

    def _add(self, public: dict[str, Any], sub: str, iss: str | None,
             capabilities: list[str], label: str | None) -> dict[str, Any]:
        registry = _module("registry")
        document = self._document()
        try:
            action, _ = registry.upsert_entry(document, self.host.capability_names(),
                                              public=public, sub=sub, iss=iss or None,
                                              capabilities=capabilities, label=label or None)
        except registry.RegistryError as exc:
            raise TrustError(f"the result would be invalid: {exc}") from None
        if action != "noop":
            registry.write_registry(self.path, document)
        return {"thumbprint": self.thumbprint(public), "action": action, "sub": sub,
                "total_entries": len(document["agents"])}

    async def preview_url(self, url: str, sub: str = "") -> PeerPreview:
        """Read a peer's key as ``trust add --from-url`` does (caps, same-origin only)."""
        pairing = _module("pairing")
        try:
            peer = await asyncio.to_thread(pairing.fetch_peer_key, url.strip())
        except pairing.PairingError as exc:
            raise TrustError(f"cannot read the key at {url}: {exc}") from None
        return PeerPreview(url=url.strip(), node_id=peer.node_id, thumbprint=peer.thumbprint,
                           sub=sub.strip() or f"darkmesh-node@{peer.node_id}")

    async def add_from_url(self, *, url: str, expect_thumbprint: str, sub: str,
                           iss: str | None, capabilities: list[str],
                           label: str | None) -> dict[str, Any]:
        """Fetch again and write only if the key is the one the operator confirmed."""
        pairing = _module("pairing")
        try:
            peer = await asyncio.to_thread(pairing.fetch_peer_key, url.strip())
        except pairing.PairingError as exc:
            raise TrustError(f"cannot read the key at {url}: {exc}") from None
        if peer.thumbprint != expect_thumbprint:
            raise TrustError(f"{url} now serves key {peer.thumbprint}, not the confirmed "
                             f"{expect_thumbprint}; do not trust it until its operator confirms")
        return await self.add(public=dict(peer.public_jwk),
                              sub=sub.strip() or f"darkmesh-node@{peer.node_id}", iss=iss,
                              capabilities=capabilities, label=label)

    async def remove(self, thumbprint: str) -> dict[str, Any]:
        """Revoke one key; effective on the next request (the registry hot-reloads)."""
        return await asyncio.to_thread(self._remove, thumbprint)

    def _remove(self, thumbprint: str) -> dict[str, Any]:
        registry = _module("registry")
        if not self.path.exists():
            raise TrustError(f"{self.path} does not exist")
        document = self._document()
        if not registry.remove_entries(document, thumbprint_value=thumbprint):
            raise TrustError(f"no entry with thumbprint {thumbprint!r}")
        registry.write_registry(self.path, document)
        return {"thumbprint": thumbprint, "action": "remove",
                "total_entries": len(document["agents"])}

    def _document(self) -> dict[str, Any]:
        registry = _module("registry")
        try:
            document: dict[str, Any] = registry.editable_document(
                self.path, self.host.capability_names())
        except registry.RegistryError as exc:
            raise TrustError(f"refusing to change {self.path}: {exc}") from None
        return document


__all__ = ["PeerPreview", "TrustError", "TrustPanel", "aauth_installed"]
