"""JWKs: validation, RFC 7638 thumbprints, key files with safe permissions, generation.

Only two key types exist here: OKP/Ed25519 (``alg: Ed25519``) and EC/P-256 (``alg:
ES256``). Every public JWK is checked strictly (base64url canonical, right length, point on
the curve) because the thumbprint decides identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

Algorithm = Literal["Ed25519", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("Ed25519", "ES256")
#: Members that make a JWK private (RSA's too, and ``k`` of symmetric keys).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class JWKError(ValueError):
    """A JWK or key file is unusable; the message says why (and how to fix it)."""

    def __init__(self, message: str, *, code: str = "cnf_jwk_malformed") -> None:
        super().__init__(message)
        self.code = code


class NonCanonicalKey(JWKError):
    """A member decodes, but not from its canonical base64url form (ambiguous thumbprint)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="thumbprint_failed")


# ------------------------------------------------------------------- base64url


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: alphabet checked, no padding, no stray bits."""
    if not isinstance(text, str) or not text or len(text) % 4 == 1:
        raise ValueError("not base64url")
    if text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _member(jwk: Mapping[str, Any], name: str, length: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JWKError(f"member {name!r} missing or not a string")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise JWKError(f"member {name!r} is not base64url") from None
    if len(raw) != length:
        raise JWKError(f"member {name!r} must be {length} bytes, got {len(raw)}")
    if b64url_encode(raw) != value:
        raise NonCanonicalKey(f"member {name!r} is not canonical base64url")
    return raw


# ------------------------------------------------------------------- public keys


PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def key_kind(jwk: Mapping[str, Any]) -> Algorithm | None:
    """The algorithm a JWK's kty/crv pair belongs to, or None when unsupported."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        return "Ed25519"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    return None


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Import the public half of a supported JWK, validating every member.

    :raises JWKError: unsupported type, missing member, bad base64url, wrong length or a
        point off the curve (``code`` says which reason code fits).
    """
    kind = key_kind(jwk)
    if kind is None:
        raise JWKError(
            f"unsupported key kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}: use OKP/Ed25519 "
            "or EC/P-256", code="cnf_jwk_unsupported",
        )
    if kind == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_member(jwk, "x", 32))
    x = int.from_bytes(_member(jwk, "x", 32), "big")
    y = int.from_bytes(_member(jwk, "y", 32), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError:
        raise JWKError("EC point is not on curve P-256") from None


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a supported public JWK, base64url unpadded."""
    kind = key_kind(jwk)
    if kind is None:
        raise JWKError("thumbprint needs an OKP/Ed25519 or EC/P-256 key",
                        code="cnf_jwk_unsupported")
    names = ("crv", "kty", "x") if kind == "Ed25519" else ("crv", "kty", "x", "y")
    required = {name: jwk[name] for name in names}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The public members of a supported JWK: ``kty, crv, x[, y]`` plus ``alg`` when known."""
    kind = key_kind(jwk)
    out: dict[str, Any] = {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"]}
    if kind == "ES256":
        out["y"] = jwk["y"]
    out["alg"] = jwk.get("alg") or kind
    return out


def has_private_members(jwk: Mapping[str, Any]) -> bool:
    return any(name in jwk for name in PRIVATE_MEMBERS) or "k" in jwk


# ------------------------------------------------------------- signatures (raw)


def ecdsa_raw_to_der(signature: bytes) -> bytes:
    """WebCrypto ``r‖s`` (32 bytes each) to DER; ValueError on a wrong length."""
    if len(signature) != 64:
        raise ValueError("ES256 signature must be 64 bytes")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    return encode_dss_signature(r, s)


def ecdsa_der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def canonical_signature(algorithm: Algorithm, signature: bytes) -> bytes:
    """The replay-cache form of a signature: ES256 with low ``s`` (``(r, n − s)`` is the
    same signature to a verifier, so a byte-keyed cache must not see two forms)."""
    if algorithm != "ES256" or len(signature) != 64:
        return signature
    s = int.from_bytes(signature[32:], "big")
    if s > P256_ORDER // 2:
        s = P256_ORDER - s
    return signature[:32] + s.to_bytes(32, "big")


def verify_raw(key: PublicKey, algorithm: Algorithm, signature: bytes, message: bytes) -> bool:
    """Verify an RFC 9421 ``ed25519`` / ``ecdsa-p256-sha256`` signature (raw form)."""
    try:
        if algorithm == "Ed25519":
            assert isinstance(key, ed25519.Ed25519PublicKey)
            if len(signature) != 64:
                return False
            key.verify(signature, message)
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(ecdsa_raw_to_der(signature), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# ------------------------------------------------------------------- private keys


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """A loaded private key with its public JWK, thumbprint and kid."""

    algorithm: Algorithm
    private_key: PrivateKey
    public_jwk: dict[str, Any]
    thumbprint: str
    kid: str
    private_jwk: dict[str, Any]
    source: str

    def sign(self, message: bytes) -> bytes:
        """Sign in the RFC 9421 / JWS raw form (Ed25519 64 bytes, ES256 ``r‖s``)."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(message)
        der = self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))
        return ecdsa_der_to_raw(der)


def signing_key_from_jwk(jwk: Mapping[str, Any], *, source: str = "JWK") -> SigningKey:
    """Load a private OKP/Ed25519 or EC/P-256 JWK whose ``alg`` (if any) fits its type."""
    if not isinstance(jwk, Mapping):
        raise JWKError(f"{source}: not a JSON object")
    kind = key_kind(jwk)
    if kind is None:
        raise JWKError(
            f"{source}: unsupported key kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}; "
            "use OKP/Ed25519 or EC/P-256 (darkmesh keygen --alg Ed25519|ES256)"
        )
    alg = jwk.get("alg")
    if alg is not None and alg != kind:
        raise JWKError(f"{source}: alg {alg!r} does not fit a {kind} key (expected {kind!r})")
    if "d" not in jwk:
        raise JWKError(f"{source}: no private member 'd' (is this the public file?)")
    public = public_key_from_jwk(jwk)
    d = _member(jwk, "d", 32)
    private: PrivateKey
    if kind == "Ed25519":
        private = ed25519.Ed25519PrivateKey.from_private_bytes(d)
        matches = private.public_key().public_bytes_raw() == public.public_bytes_raw()  # type: ignore[union-attr]
    else:
        try:
            private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
        except ValueError:
            raise JWKError(f"{source}: member 'd' is not a valid P-256 scalar") from None
        matches = private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    if not matches:
        raise JWKError(f"{source}: private member 'd' does not match the public members")
    pub = public_jwk(jwk)
    pub["alg"] = kind
    tp = thumbprint(jwk)
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) and jwk.get("kid") else tp
    return SigningKey(algorithm=kind, private_key=private, public_jwk=pub, thumbprint=tp,
                      kid=str(kid), private_jwk=dict(jwk), source=source)


def generate_jwk(algorithm: Algorithm) -> dict[str, Any]:
    """A fresh private JWK ``{kty, crv, x[, y], d, alg, kid}``; ``kid`` is the thumbprint."""
    jwk: dict[str, Any]
    if algorithm == "Ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = {"kty": "OKP", "crv": "Ed25519",
               "x": b64url_encode(key.public_key().public_bytes_raw()),
               "d": b64url_encode(key.private_bytes_raw())}
    elif algorithm == "ES256":
        eckey = ec.generate_private_key(ec.SECP256R1())
        numbers = eckey.private_numbers()
        jwk = {"kty": "EC", "crv": "P-256",
               "x": b64url_encode(numbers.public_numbers.x.to_bytes(32, "big")),
               "y": b64url_encode(numbers.public_numbers.y.to_bytes(32, "big")),
               "d": b64url_encode(numbers.private_value.to_bytes(32, "big"))}
    else:
        raise JWKError(f"unsupported algorithm {algorithm!r}; choose one of: Ed25519, ES256")
    jwk["alg"] = algorithm
    jwk["kid"] = thumbprint(jwk)
    return jwk


# -------------------------------------------------------------------- key files


def check_private_file_mode(path: Path) -> None:
    """Refuse a private key file readable or writable by group or others."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise JWKError(
            f"private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):o}); run chmod 600 {path}"
        )


def _read_json_file(path: Path, what: str) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JWKError(
            f"{what} {path} does not exist (create one with `darkmesh keygen`)"
        ) from None
    except OSError as exc:
        raise JWKError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise JWKError(f"{what} {path} is not valid JSON") from None


def load_private_key_file(path: Path) -> SigningKey:
    """Load a private JWK file after checking its permissions (0600)."""
    path = Path(path)
    if path.exists():
        check_private_file_mode(path)
    data = _read_json_file(path, "private key file")
    return signing_key_from_jwk(data, source=str(path))


def load_public_key_file(path: Path) -> dict[str, Any]:
    """Load a public JWK (or a one-key JWKS); private material is refused."""
    data = _read_json_file(Path(path), "public key file")
    if isinstance(data, dict) and isinstance(data.get("keys"), list) and len(data["keys"]) == 1:
        data = data["keys"][0]
    if not isinstance(data, dict):
        raise JWKError(f"public key file {path}: not a JSON object")
    if has_private_members(data):
        raise JWKError(
            f"public key file {path} contains private key material; pass the .public.jwk file"
        )
    public_key_from_jwk(data)
    alg = data.get("alg")
    kind = key_kind(data)
    if alg is not None and alg != kind:
        raise JWKError(f"public key file {path}: alg {alg!r} does not fit a {kind} key")
    return public_jwk(data)


def write_new_file(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (``O_CREAT|O_EXCL``); with ``force``,
    replace an existing file atomically instead."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if force and path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if tmp.exists():
            tmp.unlink()
        _write_exclusive(tmp, data, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return
    _write_exclusive(path, data, mode)
    fsync_dir(path.parent)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
