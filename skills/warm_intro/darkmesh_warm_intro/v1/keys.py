"""State keys and identifiers of the v1 protocol (all under ``host.state("warm_intro")``).

Message-supplied strings never appear raw inside a key: they are hashed, so a hostile
``requester_id`` such as ``"a:b"`` cannot collide with another requester's prefix.
"""

from __future__ import annotations

import hashlib
import re
import secrets

SESSION = "v1:session:"
TOKEN = "v1:token:"
APPROVAL = "v1:approval:"
AUDIT = "v1:audit:"
BUDGET = "v1:budget:"
#: One summary per request this node made, for ``GET /requests`` (kept as long as a session).
RECENT = "v1:recent:"

#: A request_id travels in a URL path (``/inbox/{request_id}``): keep it path-safe.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def token_key(token: str) -> str:
    """Reveal tokens are looked up by their hash: the index lookup leaks nothing useful
    about the secret, and the stored value is compared in constant time afterwards."""
    return TOKEN + digest(token)


def budget_prefix(requester_id: str) -> str:
    return f"{BUDGET}{digest(requester_id)[:32]}:"


def budget_key(requester_id: str, request_id: str) -> str:
    return budget_prefix(requester_id) + digest(request_id)[:32]


def new_request_id() -> str:
    """128 bits (upstream uses 32): unguessable, and hex is URL-path safe."""
    return secrets.token_hex(16)


def new_response_token() -> str:
    return secrets.token_hex(16)


def new_reveal_token() -> str:
    return secrets.token_hex(16)


def new_consent_id() -> str:
    # 10 hex as upstream; a consent also needs the unguessable request_id.
    return secrets.token_hex(5)


def new_pseudonym() -> str:
    """A fresh opaque pseudonym per answer (§10.1 item 9): unlinkable across requests."""
    return "p_" + secrets.token_hex(8)


def new_approval_id() -> str:
    return "v1a_" + secrets.token_hex(8)


def is_path_safe_request_id(value: object) -> bool:
    return isinstance(value, str) and bool(REQUEST_ID_PATTERN.match(value))
