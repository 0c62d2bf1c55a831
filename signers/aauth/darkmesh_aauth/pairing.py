"""Pairing from a URL: read a peer node's published key (``aauth.md`` §7.2, §7.3).

``GET <url>/.well-known/jwks.json`` and ``GET <url>/darkmesh/health`` with a size cap, a
time cap, and redirects followed only within the same scheme, host and port.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from darkmesh_aauth.keys import (
    JWKError,
    has_private_members,
    key_kind,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
)

MAX_BYTES = 64 * 1024
TIMEOUT_SEC = 5.0
MAX_REDIRECTS = 3


class PairingError(Exception):
    """The peer's key cannot be read; the message says why."""


@dataclass(frozen=True, kw_only=True)
class PeerKey:
    node_id: str
    public_jwk: dict[str, Any]
    thumbprint: str
    kid: str | None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _get_json(client: httpx.Client, url: str, deadline: float) -> Any:
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        if time.monotonic() > deadline:
            raise PairingError(f"timed out after {TIMEOUT_SEC:.0f} s")
        try:
            with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("location", ""))
                    if _origin(target) != origin:
                        raise PairingError(f"refusing a redirect from {url} to another host: "
                                           f"{target}")
                    url = target
                    continue
                if response.status_code != 200:
                    raise PairingError(f"GET {url} answered {response.status_code}")
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise PairingError(f"GET {url}: response larger than {MAX_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise PairingError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise PairingError(f"GET {url} did not return JSON") from None
    raise PairingError(f"too many redirects from {url}")


def fetch_peer_key(base_url: str, *, kid: str | None = None,
                   transport: httpx.BaseTransport | None = None) -> PeerKey:
    """The peer's node id and signing key; ``kid`` picks one of several keys."""
    base = base_url.strip().rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        raise PairingError(f"{base_url!r} is not an http:// or https:// URL")
    deadline = time.monotonic() + TIMEOUT_SEC
    with httpx.Client(timeout=TIMEOUT_SEC, follow_redirects=False, transport=transport) as client:
        jwks = _get_json(client, f"{base}/.well-known/jwks.json", deadline)
        health = _get_json(client, f"{base}/darkmesh/health", deadline)
    node_id = health.get("node_id") if isinstance(health, dict) else None
    if not isinstance(node_id, str) or not node_id:
        raise PairingError(f"{base}/darkmesh/health names no node_id")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise PairingError(f"{base}/.well-known/jwks.json has no keys")
    candidates = [k for k in keys if isinstance(k, dict) and key_kind(k) is not None]
    if kid is not None:
        candidates = [k for k in candidates if k.get("kid") == kid]
        if not candidates:
            raise PairingError(f"no supported key with kid {kid!r} at {base}")
    if len(candidates) != 1:
        kids = ", ".join(str(k.get("kid")) for k in candidates) or "none supported"
        raise PairingError(f"{base} publishes {len(candidates)} usable keys ({kids}); "
                           "pick one with --kid")
    chosen = candidates[0]
    if has_private_members(chosen):
        raise PairingError(f"{base} publishes private key material; refusing it")
    try:
        public_key_from_jwk(chosen)
    except JWKError as exc:
        raise PairingError(f"{base}: invalid key: {exc}") from None
    return PeerKey(node_id=node_id, public_jwk=public_jwk(chosen), thumbprint=thumbprint(chosen),
                   kid=chosen.get("kid") if isinstance(chosen.get("kid"), str) else None)
