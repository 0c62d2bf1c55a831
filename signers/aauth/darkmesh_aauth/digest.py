"""``Content-Digest`` (RFC 9530) in the one form httpsig compares: ``sha-256=:<b64>:``."""

from __future__ import annotations

import base64
import hashlib
import hmac

from darkmesh_aauth.sfv import SFError, parse_dictionary


def content_digest(body: bytes) -> str:
    """``sha-256=:<padded base64 of SHA-256(body)>:`` over the exact bytes sent."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def check_content_digest(value: str, body: bytes) -> str | None:
    """None when ``value`` is a correct digest of ``body``, else the reason code."""
    try:
        parsed = parse_dictionary(value)
    except SFError:
        return "content_digest_malformed"
    if len(parsed) != 1:
        return "content_digest_malformed"
    ((algorithm, (digest, _params)),) = parsed.items()
    if not isinstance(digest, bytes):
        return "content_digest_malformed"
    if algorithm != "sha-256":
        return "content_digest_unsupported"
    if not hmac.compare_digest(digest, hashlib.sha256(body).digest()):
        return "content_digest_mismatch"
    return None
