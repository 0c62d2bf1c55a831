"""The outbound signer: an ``httpx.Auth`` per role (``aauth.md`` §1, §7.4).

Roles: ``node`` (``DARKMESH_AAUTH_PRIVATE_JWK(_PATH)``, sub ``darkmesh-node@<node_id>``),
``operator`` (``<key_dir>/operator.private.jwk``, sub ``darkmesh-operator@<node_id>``) and
``connector:<name>`` (``<key_dir>/connector-<name>.private.jwk``, sub
``connector-<name>@<operator>``). Every attempt is signed afresh; profile ``neotoma`` sends
only ``created``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from darkmesh_aauth.digest import content_digest
from darkmesh_aauth.keys import (
    JWKError,
    SigningKey,
    b64url_encode,
    load_private_key_file,
    signing_key_from_jwk,
)
from darkmesh_aauth.rfc9421 import Message, signature_base
from darkmesh_aauth.settings import AAuthSettings
from darkmesh_aauth.sfv import Token, serialize_dictionary, serialize_member
from darkmesh_aauth.token import REUSE_MARGIN_SEC, mint_token
from darkmesh_aauth.verifier import node_id_of, required_components
from sdl_core import PUBLIC, AgentIdentity, RouteSpec, StartupError, normalise_authority

Profile = Literal["darkmesh", "neotoma"]
LABEL = "aasig"
JWKS_PATH = "/.well-known/jwks.json"
CONNECTOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SIGNATURE_HEADERS = ("signature", "signature-input", "signature-key")


def covered_components(*, has_body: bool, has_query: bool) -> list[str]:
    """The components our signer covers, in the spec's order (``aauth.md`` §1.3): exactly
    what our verifier requires, so the one list lives beside the verifier."""
    return required_components(has_body, has_query)


@dataclass(kw_only=True)
class RoleKey:
    """One role's key and identity, with its cached agent token."""

    key: SigningKey
    sub: str
    iss: str
    kid: str
    ttl: int
    _token: str = ""
    _token_exp: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def identity(self) -> AgentIdentity:
        return AgentIdentity(sub=self.sub, iss=self.iss, thumbprint=self.key.thumbprint,
                             public_jwk=dict(self.key.public_jwk))

    def token(self, now: int) -> str:
        """The agent token, reused until less than a minute of it remains."""
        margin = min(REUSE_MARGIN_SEC, self.ttl // 2)
        with self._lock:
            if not self._token or self._token_exp - now < margin:
                self._token = mint_token(self.key, sub=self.sub, iss=self.iss, kid=self.kid,
                                         ttl=self.ttl, now=now)
                self._token_exp = now + self.ttl
            return self._token


def sign_message(
    role: RoleKey,
    *,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    authority: str | None = None,
    profile: Profile = "darkmesh",
    window: int = 60,
    send_keyid: bool = True,
    now: int | None = None,
) -> dict[str, str]:
    """The headers to add to a request so that it verifies (``aauth.md`` §1).

    ``headers`` are the request's own; the result holds ``Signature-Key``,
    ``Signature-Input``, ``Signature`` and, with a body, ``Content-Digest`` (and
    ``Content-Type: application/json`` when the request has none).
    """
    created = int(time.time()) if now is None else now
    message = Message.from_url(method.upper(), url)
    target_authority = normalise_authority(authority, message.scheme) if authority \
        else message.authority
    has_body = len(body) > 0
    has_query = bool(message.query)
    added: dict[str, str] = {}
    own = [(k, v) for k, v in headers if k.lower() not in _SIGNATURE_HEADERS]
    if has_body:
        if not any(k.lower() == "content-type" for k, _ in own):
            added["Content-Type"] = "application/json"
        own = [(k, v) for k, v in own if k.lower() != "content-digest"]
        added["Content-Digest"] = content_digest(body)
    token = role.token(created)
    added["Signature-Key"] = serialize_dictionary({LABEL: (Token("jwt"), {"jwt": token})})
    components = covered_components(has_body=has_body, has_query=has_query)
    params: dict[str, Any] = {"created": created}
    if profile == "darkmesh":
        params["expires"] = created + window
        params["nonce"] = b64url_encode(secrets.token_bytes(16))
        if send_keyid:
            params["keyid"] = role.key.thumbprint
    inner: tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]] = (
        [(name, {}) for name in components], params)
    params_value = serialize_member(inner)
    signed = Message(method=method.upper(), scheme=message.scheme, authority=target_authority,
                     path=message.path, query=message.query,
                     headers=[*own, *added.items()])
    base = signature_base(signed, [(name, {}) for name in components], params_value)
    signature = role.key.sign(base.encode("ascii"))
    added["Signature-Input"] = f"{LABEL}={params_value}"
    added["Signature"] = serialize_dictionary({LABEL: (signature, {})})
    return added


class AAuthAuth(httpx.Auth):
    """Signs each request (and each retry) afresh as one role."""

    requires_request_body = True

    def __init__(self, role: RoleKey, *, authority: str | None, profile: Profile, window: int,
                 send_keyid: bool, clock: Callable[[], float] = time.time) -> None:
        self.role = role
        self.authority = authority
        self.profile = profile
        self.window = window
        self.send_keyid = send_keyid
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        for name in _SIGNATURE_HEADERS:
            request.headers.pop(name, None)
        # Rebuild the URL from the raw target so @path keeps the exact bytes httpx sends.
        url = request.url
        target = url.raw_path.decode("ascii")
        added = sign_message(
            self.role, method=request.method, url=f"{url.scheme}://{url.netloc.decode('ascii')}{target}",
            headers=request.headers.multi_items(), body=request.content,
            authority=self.authority, profile=self.profile, window=self.window,
            send_keyid=self.send_keyid, now=int(self.clock()),
        )
        for name, value in added.items():
            request.headers[name] = value
        yield request


class AAuthSigner:
    """Implements :class:`sdl_core.Signer`; also serves the node's JWKS route."""

    def __init__(self, settings: AAuthSettings, *, node_id: str | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.node_id = node_id
        self.operator_tag = node_id or settings.operator or "local"
        self.clock = clock
        self.key_dir = settings.resolved_key_dir()
        self._roles: dict[str, RoleKey] = {}
        self._lock = threading.Lock()
        node = self._load_node_key()
        if node is not None:
            self._roles["node"] = node
        operator_path = settings.operator_private_jwk_path or self.key_dir / "operator.private.jwk"
        if settings.operator_private_jwk_path is not None or operator_path.exists():
            self._roles["operator"] = self._role_from_file(
                operator_path, sub=f"darkmesh-operator@{self.operator_tag}", iss=settings.iss,
                setting="DARKMESH_AAUTH_OPERATOR_PRIVATE_JWK_PATH",
            )

    # ------------------------------------------------------------- loading

    def _load_node_key(self) -> RoleKey | None:
        s = self.settings
        raw = s.private_jwk.get_secret_value().strip()
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                raise StartupError(
                    "darkmesh-aauth: DARKMESH_AAUTH_PRIVATE_JWK is not valid JSON"
                ) from None
            try:
                key = signing_key_from_jwk(data, source="DARKMESH_AAUTH_PRIVATE_JWK")
            except JWKError as exc:
                raise StartupError(f"darkmesh-aauth: {exc}") from None
        elif s.private_jwk_path is not None:
            try:
                key = load_private_key_file(s.private_jwk_path)
            except JWKError as exc:
                raise StartupError(
                    f"darkmesh-aauth: DARKMESH_AAUTH_PRIVATE_JWK_PATH: {exc}"
                ) from None
        else:
            return None
        sub = s.sub.strip() or (f"darkmesh-node@{self.node_id}" if self.node_id else "")
        if not sub:
            raise StartupError("darkmesh-aauth: DARKMESH_AAUTH_SUB is required when no "
                               "node_id is configured")
        if self.node_id is not None and node_id_of(sub) != self.node_id:
            raise StartupError(
                f"darkmesh-aauth: DARKMESH_AAUTH_SUB {sub!r} names node "
                f"{node_id_of(sub)!r}, but this node's node_id is {self.node_id!r}; use "
                f"darkmesh-node@{self.node_id}"
            )
        return RoleKey(key=key, sub=sub, iss=s.iss, kid=s.kid or key.kid, ttl=s.token_ttl_sec)

    def _role_from_file(self, path: Path, *, sub: str, iss: str, setting: str) -> RoleKey:
        try:
            key = load_private_key_file(path)
        except JWKError as exc:
            raise StartupError(f"darkmesh-aauth: {setting}: {exc}") from None
        return RoleKey(key=key, sub=sub, iss=iss, kid=key.kid, ttl=self.settings.token_ttl_sec)

    def _connector(self, name: str) -> RoleKey | None:
        if not CONNECTOR_NAME.match(name):
            raise ValueError(f"invalid connector name {name!r}")
        s = self.settings
        path = s.connector_private_jwk_path or self.key_dir / f"connector-{name}.private.jwk"
        if s.connector_private_jwk_path is None and not path.exists():
            return None
        return self._role_from_file(
            path, sub=s.connector_sub or f"connector-{name}@{self.operator_tag}",
            iss=s.connector_iss or s.iss, setting="connector key",
        )

    def _role(self, role: str) -> RoleKey | None:
        with self._lock:
            if role in self._roles:
                return self._roles[role]
            if role.startswith("connector:"):
                loaded = self._connector(role.partition(":")[2])
                if loaded is not None:
                    self._roles[role] = loaded
                return loaded
            return None

    # ----------------------------------------------------------- Signer API

    def has_role(self, role: str) -> bool:
        """True when a key is configured for ``role``."""
        return self._role(role) is not None

    def role_key(self, role: str) -> RoleKey:
        found = self._role(role)
        if found is None:
            raise LookupError(f"darkmesh-aauth: no key configured for role {role!r}")
        return found

    def identity(self, role: str = "node") -> AgentIdentity:
        return self.role_key(role).identity()

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: Profile = "darkmesh") -> httpx.Auth:
        """An ``httpx.Auth`` signing as ``role`` (``profile="neotoma"``: only ``created``)."""
        if profile not in ("darkmesh", "neotoma"):
            raise ValueError(f"unknown profile {profile!r}; choose darkmesh or neotoma")
        return AAuthAuth(self.role_key(role), authority=authority, profile=profile,
                         window=self.settings.signature_window_sec,
                         send_keyid=self.settings.send_keyid, clock=self.clock)

    # ---------------------------------------------------------------- JWKS

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: the node key only (``aauth.md`` §7.2)."""
        node = self._roles.get("node")
        if node is None:
            return {"keys": []}
        jwk = dict(node.key.public_jwk) | {"kid": node.kid, "use": "sig"}
        return {"keys": [jwk]}

    async def jwks_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.jwks(), headers={"Cache-Control": "max-age=300"})

    def routes(self) -> list[RouteSpec]:
        return [RouteSpec(path=JWKS_PATH, endpoint=self.jwks_endpoint, methods=("GET",),
                          capability=PUBLIC, name="aauth-jwks",
                          description="the node's public signing key (JWKS)")]

    def status(self) -> dict[str, Any]:
        roles: dict[str, Any] = {}
        for name, role in sorted(self._roles.items()):
            roles[name] = {"sub": role.sub, "iss": role.iss, "thumbprint": role.key.thumbprint,
                           "alg": role.key.algorithm}
        return {"roles": roles, "key_dir": str(self.key_dir)}

