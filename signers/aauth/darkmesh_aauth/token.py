"""Self-issued ``aa-agent+jwt`` tokens (``aauth.md`` §1.2): minting and JWS checks.

The JWS is made and checked with joserfc, always with an explicit one-element algorithm
list (joserfc accepts ``none`` when it is listed), after the verifier has checked ``typ``,
``alg`` and the claims itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from darkmesh_aauth.keys import SigningKey, b64url_decode, b64url_encode

TOKEN_TYPE = "aa-agent+jwt"
#: A cached token is replaced once less than this many seconds of it remain.
REUSE_MARGIN_SEC = 60


def mint_token(key: SigningKey, *, sub: str, iss: str, kid: str, ttl: int, now: int) -> str:
    """A compact JWS over our claims, signed by ``key`` (whose public half is ``cnf.jwk``)."""
    header = {"alg": key.algorithm, "typ": TOKEN_TYPE, "kid": kid or key.thumbprint}
    claims = {
        "iss": iss,
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "jti": b64url_encode(secrets.token_bytes(16)),
        "cnf": {"jwk": dict(key.public_jwk)},
        "jkt": key.thumbprint,
    }
    payload = json.dumps(claims, separators=(",", ":")).encode("utf-8")
    joskey = _import_private(key)
    return jws.serialize_compact(header, payload, joskey, algorithms=[key.algorithm])


def _import_private(key: SigningKey) -> OKPKey | ECKey:
    members = {k: v for k, v in key.private_jwk.items() if k in ("kty", "crv", "x", "y", "d")}
    if key.algorithm == "Ed25519":
        return OKPKey.import_key(members)
    return ECKey.import_key(members)


def import_public(jwk: Mapping[str, Any], algorithm: str) -> OKPKey | ECKey:
    members = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")}
    if algorithm == "Ed25519":
        return OKPKey.import_key(members)
    return ECKey.import_key(members)


@dataclass(frozen=True, kw_only=True)
class ParsedToken:
    """A token split and decoded, not yet trusted."""

    raw: str
    header: dict[str, Any]
    payload: dict[str, Any]


class TokenShapeError(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def parse_token(raw: str) -> ParsedToken:
    """Split a compact JWS: three non-empty base64url segments, header and payload objects.

    :raises TokenShapeError: ``jwt_malformed`` or ``jwt_decode_failed``.
    """
    segments = raw.split(".")
    if len(segments) != 3 or not all(segments):
        raise TokenShapeError("jwt_malformed")
    try:
        decoded = [b64url_decode(segment) for segment in segments]
    except ValueError:
        raise TokenShapeError("jwt_malformed") from None
    try:
        header = json.loads(decoded[0])
        payload = json.loads(decoded[1])
    except (ValueError, UnicodeDecodeError):
        raise TokenShapeError("jwt_decode_failed") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenShapeError("jwt_decode_failed")
    return ParsedToken(raw=raw, header=header, payload=payload)


def jws_valid(token: ParsedToken, jwk: Mapping[str, Any], algorithm: str) -> bool:
    """True when the token's JWS verifies under ``jwk`` with exactly ``algorithm``."""
    try:
        jws.deserialize_compact(token.raw, import_public(jwk, algorithm), algorithms=[algorithm])
    except (JoseError, ValueError):
        return False
    return True
