"""RFC 9421 verification as Neotoma 0.22.0 runs it (``@hellocoop/httpsig`` 1.4.0).

Written from ``neotoma.md`` §1.3–1.4, independently of ``darkmesh-aauth``. It performs
exactly the §1.3 checks and no more, with the 1.4.0 quirks: every signature parameter
other than ``created`` is rebuilt as a quoted string (so an integer ``expires`` breaks
the signature), ``@query`` is rebuilt without ``?``, ``@target-uri``/``@scheme`` are
always ``https``, and ES256 signatures are raw ``r‖s``. It does not verify the JWT's own
signature, ``typ``, ``iss``/``sub``/``iat``/``jti``, coverage of ``@method``/``@path``,
``expires``, or replay.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

WINDOW_SECONDS = 60
SCHEMES = {"hwk", "jwt", "jkt-jwt", "jwks_uri"}


@dataclass(frozen=True, kw_only=True)
class SignedIdentity:
    """The caller as Neotoma sees it: the key's thumbprint plus *unverified* claims."""

    thumbprint: str
    sub: str | None
    iss: str | None
    public_jwk: dict[str, Any]


class SignatureRejected(Exception):
    """Verification failed. ``code`` is what ``/session`` shows as
    ``signature_error_code``; ``kind`` picks the strict-mode message."""

    def __init__(self, code: str, kind: str = "signature") -> None:
        self.code = code
        self.kind = kind  # signature | token | crash
        super().__init__(code)


def is_signed(headers: Mapping[str, str]) -> bool:
    return any(h in headers for h in ("signature", "signature-input", "signature-key"))


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url without padding."""
    if jwk.get("kty") == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        members = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _parse_dictionary(value: str, header: str) -> dict[str, Any]:
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except Exception as exc:  # http_sf raises several types on malformed input
        raise SignatureRejected(f"Invalid {header} header") from exc
    if not isinstance(parsed, dict):
        raise SignatureRejected(f"Invalid {header} header")
    return parsed


def _jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureRejected("Invalid agent JWT", "token")
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureRejected("Invalid agent JWT", "token") from exc
    if not isinstance(claims, dict):
        raise SignatureRejected("Invalid agent JWT", "token")
    return claims


def _signature_params(components: list[str], params: Mapping[str, Any]) -> str:
    inner = " ".join(f'"{name}"' for name in components)
    out = f"({inner})"
    for name, value in params.items():
        if name == "created":
            out += f";created={value}"
        else:
            # httpsig 1.4.0 rebuilds every other parameter as a quoted string.
            out += f';{name}="{value}"'
    return out


def _component_value(
    name: str, *, method: str, authority: str, path: str, query: str,
    headers: Mapping[str, str],
) -> str:
    if name == "@method":
        return method.upper()
    if name == "@authority":
        return authority
    if name == "@path":
        return path or "/"
    if name == "@query":
        return query  # 1.4.0 quirk: without the leading "?"
    if name == "@request-target":
        return f"{path or '/'}?{query}" if query else (path or "/")
    if name == "@target-uri":
        suffix = f"?{query}" if query else ""
        return f"https://{authority}{path or '/'}{suffix}"
    if name == "@scheme":
        return "https"
    if name.startswith("@"):
        raise SignatureRejected(f"Unsupported derived component: {name}")
    return headers[name]


def _public_key_verify(jwk: Mapping[str, Any], signature: bytes, base: bytes) -> bool:
    try:
        if jwk.get("kty") == "OKP":
            Ed25519PublicKey.from_public_bytes(b64url_decode(str(jwk["x"]))).verify(
                signature, base
            )
            return True
        if len(signature) != 64:
            return False  # DER or anything else: httpsig expects raw r‖s
        x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
        y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key.verify(der, base, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False


def verify(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    authority: str,
    now: float,
) -> SignedIdentity:
    """Verify one request; ``headers`` have lower-case names.

    :raises SignatureRejected: with the §1.3 failure text or code.
    """
    try:
        return _verify(method=method, path=path, query=query, headers=headers, body=body,
                       authority=authority, now=now)
    except SignatureRejected:
        raise
    except Exception as exc:  # a crash in the verifier has its own message
        raise SignatureRejected(f"{type(exc).__name__}: {exc}", "crash") from exc


def _verify(
    *, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
    authority: str, now: float,
) -> SignedIdentity:
    if "signature-key" not in headers:
        raise SignatureRejected("Invalid Signature-Key: must have exactly one dictionary member")
    signature_key = _parse_dictionary(headers["signature-key"], "Signature-Key")
    if len(signature_key) != 1:
        raise SignatureRejected("Invalid Signature-Key: must have exactly one dictionary member")
    label, (scheme_token, key_params) = next(iter(signature_key.items()))
    scheme = str(scheme_token)
    if scheme not in SCHEMES:
        raise SignatureRejected(f"Invalid Signature-Key: unsupported scheme {scheme}")

    inputs = _parse_dictionary(headers.get("signature-input", ""), "Signature-Input")
    signatures = _parse_dictionary(headers.get("signature", ""), "Signature")
    if label not in inputs or label not in signatures:
        raise SignatureRejected(f"Missing signature for label: {label}")
    covered, params = inputs[label]
    signature = signatures[label][0]
    if not isinstance(covered, list) or not isinstance(signature, bytes):
        raise SignatureRejected("Invalid Signature-Input header")

    created = params.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise SignatureRejected("Signature-Input missing required parameter: created")
    skew = abs(int(now) - created)  # whole seconds, as Date.now()/1000 floored
    if skew > WINDOW_SECONDS:
        raise SignatureRejected(
            f"Signature timestamp out of acceptable range (skew: {skew}s)"
        )

    names: list[str] = []
    for item, item_params in covered:
        if item_params:
            raise SignatureRejected(
                "AAuth profile violation: signature-key must be in covered components"
            )
        names.append(str(item))
    if "signature-key" not in names:
        raise SignatureRejected(
            "AAuth profile violation: signature-key must be in covered components"
        )

    if "content-digest" in names and body:
        digest = headers.get("content-digest")
        if digest is None:
            raise SignatureRejected("content-digest component specified but header missing")
        expected = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
        if digest != expected:
            raise SignatureRejected("content-digest does not match body")
    for name in names:
        if not name.startswith("@") and name not in headers:
            raise SignatureRejected(f"Missing header for component: {name}")

    if scheme != "jwt" or "jwt" not in key_params:
        raise SignatureRejected("JWT missing cnf.jwk claim", "token")
    claims = _jwt_claims(str(key_params["jwt"]))
    cnf = claims.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(jwk, dict):
        raise SignatureRejected("JWT missing cnf.jwk claim", "token")
    kty = jwk.get("kty")
    if not ((kty == "OKP" and jwk.get("crv") == "Ed25519")
            or (kty == "EC" and jwk.get("crv") == "P-256")):
        raise SignatureRejected(f"Unsupported key type: {kty}", "token")
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp < now - WINDOW_SECONDS:
        raise SignatureRejected("jwt_expired", "token")

    lines = [
        f'"{name}": '
        + _component_value(name, method=method, authority=authority, path=path, query=query,
                           headers=headers)
        for name in names
    ]
    lines.append('"@signature-params": ' + _signature_params(names, params))
    base = "\n".join(lines).encode("utf-8")
    if not _public_key_verify(jwk, signature, base):
        raise SignatureRejected("signature_invalid")
    sub = claims.get("sub")
    iss = claims.get("iss")
    return SignedIdentity(
        thumbprint=thumbprint(jwk),
        sub=sub if isinstance(sub, str) else None,
        iss=iss if isinstance(iss, str) else None,
        public_jwk=dict(jwk),
    )
