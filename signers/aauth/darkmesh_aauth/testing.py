"""Helpers for tests and benchmarks that need AAuth agents (test keys only).

``Agent`` bundles a fresh key, its identity and its registry entry;
:func:`sign_custom` signs with arbitrary components, parameters and token, so a test can
build a request that is valid in every respect but one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from darkmesh_aauth.keys import (
    Algorithm,
    SigningKey,
    b64url_encode,
    generate_jwk,
    signing_key_from_jwk,
)
from darkmesh_aauth.registry import entry_document, write_registry
from darkmesh_aauth.rfc9421 import Message, signature_base
from darkmesh_aauth.sfv import Token, serialize_dictionary, serialize_member
from darkmesh_aauth.signer import LABEL, RoleKey, sign_message
from sdl_core import InboundRequest


@dataclass(kw_only=True)
class Agent:
    """A key with a sub, an issuer and the capabilities its registry entry grants."""

    key: SigningKey
    role: RoleKey
    capabilities: tuple[str, ...]

    @property
    def sub(self) -> str:
        return self.role.sub

    @property
    def thumbprint(self) -> str:
        return self.key.thumbprint

    def entry(self, **changes: Any) -> dict[str, Any]:
        """This agent's registry entry (``changes`` override fields)."""
        doc = entry_document(public=self.key.public_jwk, sub=self.role.sub, iss=self.role.iss,
                             capabilities=list(self.capabilities), label=None)
        doc.update(changes)
        return doc

    def sign(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
             body: bytes = b"", **options: Any) -> dict[str, str]:
        """The request's headers (its own plus the signature headers)."""
        own = dict(headers or {})
        added = sign_message(self.role, method=method, url=url, headers=list(own.items()),
                             body=body, **options)
        return own | added


def new_agent(alg: Algorithm = "Ed25519", *, sub: str = "darkmesh-node@node_a",
              iss: str = "https://darkmesh.local", capabilities: Iterable[str] = ("*",),
              ttl: int = 300) -> Agent:
    key = signing_key_from_jwk(generate_jwk(alg))
    role = RoleKey(key=key, sub=sub, iss=iss, kid=key.kid, ttl=ttl)
    return Agent(key=key, role=role, capabilities=tuple(capabilities))


def write_trust_file(path: Path, agents: Sequence[Agent | Mapping[str, Any]]) -> Path:
    entries = [a.entry() if isinstance(a, Agent) else dict(a) for a in agents]
    write_registry(path, {"version": 1, "agents": entries})
    return path


def forge_token(key: SigningKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """A compact JWS with any header and claims, signed (raw) by ``key``."""
    head = b64url_encode(json.dumps(dict(header), separators=(",", ":")).encode())
    body = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signature = key.sign(f"{head}.{body}".encode("ascii"))
    return f"{head}.{body}.{b64url_encode(signature)}"


def standard_claims(agent: Agent, now: int | None = None, **changes: Any) -> dict[str, Any]:
    """The claims our signer writes, for ``agent`` (``changes`` override; ``None`` drops)."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": agent.role.iss, "sub": agent.role.sub, "iat": issued, "exp": issued + 300,
        "jti": b64url_encode(b"0123456789abcdef"),
        "cnf": {"jwk": dict(agent.key.public_jwk)}, "jkt": agent.key.thumbprint,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign_custom(
    key: SigningKey,
    *,
    method: str,
    url: str,
    token: str,
    components: Sequence[str],
    params: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    authority: str | None = None,
    label: str = LABEL,
    scheme_token: str = "jwt",
) -> dict[str, str]:
    """Sign any component list with any parameters; ``headers`` must already hold the
    covered fields (``content-type``, ``content-digest``) — ``signature-key`` is added."""
    parts = urlsplit(url)
    own = dict(headers or {})
    own["Signature-Key"] = serialize_dictionary({label: (Token(scheme_token), {"jwt": token})})
    message = Message(method=method, scheme=parts.scheme, authority=authority or parts.netloc,
                      path=parts.path or "/", query=parts.query if "?" in url else None,
                      headers=list(own.items()))
    inner: tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]] = (
        [(name, {}) for name in components], dict(params))
    params_value = serialize_member(inner)
    base = signature_base(message, [(name, {}) for name in components], params_value)
    own["Signature-Input"] = f"{label}={params_value}"
    own["Signature"] = serialize_dictionary({label: (key.sign(base.encode("ascii")), {})})
    return own


def inbound(method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> InboundRequest:
    """What the guard would hand the verifier for this request."""
    parts = urlsplit(url)
    pairs = [(k.lower(), v) for k, v in headers.items()]
    if not any(k == "host" for k, _ in pairs):
        pairs.append(("host", parts.netloc))
    return InboundRequest(method=method.upper(), raw_path=parts.path or "/", query=parts.query,
                          headers=pairs, body=body)


class MemoryReplayCache:
    """An in-process ``remember_once`` (the node uses its database, a relay its backend)."""

    def __init__(self) -> None:
        self.entries: dict[str, float] = {}

    async def __call__(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        expiry = self.entries.get(key)
        if expiry is not None and expiry > now:
            return False
        self.entries[key] = now + ttl
        return True
