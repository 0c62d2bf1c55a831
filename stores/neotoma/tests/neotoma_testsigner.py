"""A test-only RFC 9421 signer, flexible enough to produce every quirk the stand-in
must judge (integer ``expires``, ``@query``, DER ES256, wrong authority …).

It is NOT the production signer (that is ``darkmesh-aauth``); the plugin's own tests use
:class:`TestSigner` through the ``sdl_core.Signer`` Protocol only when the real plugin is
not installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sdl_core import AgentIdentity


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(kw_only=True)
class TestKey:
    alg: Literal["Ed25519", "ES256"]
    private: Any

    __test__ = False  # not a pytest class

    @classmethod
    def generate(cls, alg: Literal["Ed25519", "ES256"] = "Ed25519") -> TestKey:
        if alg == "Ed25519":
            return cls(alg=alg, private=Ed25519PrivateKey.generate())
        return cls(alg=alg, private=ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_jwk(self) -> dict[str, str]:
        pub = self.private.public_key()
        if self.alg == "Ed25519":
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
            return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "alg": "Ed25519"}
        numbers = pub.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")), "alg": "ES256"}

    @property
    def thumbprint(self) -> str:
        jwk = self.public_jwk
        keys = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
        canonical = json.dumps({k: jwk[k] for k in keys}, separators=(",", ":"), sort_keys=True)
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def sign(self, data: bytes, *, der: bool = False) -> bytes:
        if self.alg == "Ed25519":
            return bytes(self.private.sign(data))
        signature = self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        if der:
            return bytes(signature)
        r, s = decode_dss_signature(signature)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_jwt(
    key: TestKey, *, sub: str, iss: str = "https://darkmesh.local", exp: int | None = None,
    iat: int | None = None, typ: str = "aa-agent+jwt", break_signature: bool = False,
    jwk: Mapping[str, Any] | None = None, omit_cnf: bool = False,
) -> str:
    now = int(time.time()) if iat is None else iat
    header = {"alg": key.alg, "typ": typ, "kid": key.thumbprint}
    claims: dict[str, Any] = {"iss": iss, "sub": sub, "iat": now,
                              "jti": secrets.token_urlsafe(16)}
    if exp is not None:
        claims["exp"] = exp
    if not omit_cnf:
        claims["cnf"] = {"jwk": dict(jwk or key.public_jwk)}
    signing_input = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(claims).encode()))
    signature = key.sign(signing_input.encode())
    if break_signature:
        signature = bytes(64)
    return signing_input + "." + b64url(signature)


def sign_request(
    *,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    key: TestKey,
    jwt: str,
    authority: str,
    components: Sequence[str] | None = None,
    params: str | None = None,
    created: int | None = None,
    der: bool = False,
    query_with_question_mark: bool = True,
    target_scheme: str = "https",
) -> dict[str, str]:
    """Signed headers for one request. ``params`` is the raw parameter suffix
    (default ``;created=<now>``); ``components`` default to aauth.md §1.3's lists."""
    out = {k.lower(): v for k, v in (headers or {}).items()}
    out["signature-key"] = f'aasig=jwt;jwt="{jwt}"'
    if body:
        out.setdefault("content-type", "application/json")
        out.setdefault("content-digest",
                       "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode()
                       + ":")
    if components is None:
        components = ["@method", "@authority", "@path"]
        if query:
            components.append("@request-target")
        if body:
            components += ["content-type", "content-digest"]
        components.append("signature-key")
    created = int(time.time()) if created is None else created
    suffix = params if params is not None else f";created={created}"

    def value(name: str) -> str:
        if name == "@method":
            return method.upper()
        if name == "@authority":
            return authority
        if name == "@path":
            return path
        if name == "@query":
            return ("?" + query) if query_with_question_mark else query
        if name == "@request-target":
            return f"{path}?{query}" if query else path
        if name == "@target-uri":
            return f"{target_scheme}://{authority}{path}" + (f"?{query}" if query else "")
        if name == "@scheme":
            return target_scheme
        return out.get(name, "")  # covered but not sent: lets tests omit a header

    signature_params = "(" + " ".join(f'"{c}"' for c in components) + ")" + suffix
    lines = [f'"{c}": {value(c)}' for c in components]
    lines.append(f'"@signature-params": {signature_params}')
    signature = key.sign("\n".join(lines).encode(), der=der)
    out["signature-input"] = f"aasig={signature_params}"
    out["signature"] = f"aasig=:{base64.b64encode(signature).decode()}:"
    return out


class _NeotomaAuth(httpx.Auth):
    requires_request_body = True

    def __init__(self, signer: TestSigner, authority: str | None) -> None:
        self.signer = signer
        self.authority = authority

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        authority = self.authority or request.url.netloc.decode()
        query = request.url.query.decode()
        jwt = make_jwt(self.signer.key, sub=self.signer.sub, iss=self.signer.iss,
                       exp=int(time.time()) + 300)
        signed = sign_request(
            method=request.method, path=request.url.raw_path.decode().split("?", 1)[0],
            query=query, body=request.content, headers=dict(request.headers),
            key=self.signer.key, jwt=jwt, authority=authority,
        )
        for name in ("signature-key", "signature-input", "signature", "content-digest",
                     "content-type"):
            if name in signed:
                request.headers[name] = signed[name]
        self.signer.signed_requests += 1
        yield request


class TestSigner:
    """Implements the ``sdl_core.Signer`` Protocol for the ``node`` role only."""

    __test__ = False
    __name__ = "neotoma-test-signer"

    def __init__(self, *, sub: str, iss: str = "https://darkmesh.local",
                 key: TestKey | None = None) -> None:
        self.key = key or TestKey.generate()
        self.sub = sub
        self.iss = iss
        self.signed_requests = 0
        self.profiles: list[str] = []

    def has_role(self, role: str) -> bool:
        return role == "node"

    def identity(self, role: str = "node") -> AgentIdentity:
        return AgentIdentity(sub=self.sub, iss=self.iss, thumbprint=self.key.thumbprint,
                             public_jwk=self.key.public_jwk)

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: str = "darkmesh") -> httpx.Auth:
        if profile != "neotoma":
            raise AssertionError("the Neotoma plugin must sign with profile='neotoma'")
        self.profiles.append(profile)
        return _NeotomaAuth(self, authority)
