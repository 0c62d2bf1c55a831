"""Record keys and value rules shared by every store and connector."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from typing import Any

DEFAULT_STRENGTH = 0.5


def normalise_email(value: Any) -> str:
    """Trimmed, lower-cased string form of an email ('' for None)."""
    if value is None:
        return ""
    return str(value).strip().lower()


def normalise_identifier(value: str, kind: str = "email") -> str:
    """NFKC, trimmed, lower-cased, with a typed prefix (``email:casey@…``) for hashing."""
    text = unicodedata.normalize("NFKC", value).strip().lower()
    if ":" in text and text.split(":", 1)[0] in {"email", "phone", "id"}:
        return text
    return f"{kind}:{text}"


def parse_strength(value: Any, default: float = DEFAULT_STRENGTH) -> float:
    """The v1 rule: numbers and numeric strings parse; anything else is ``default``.

    Non-finite values also become ``default``; callers clamp with :func:`clamp01`.
    """
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return default
    else:
        return default
    return result if math.isfinite(result) else default


def clamp01(value: float) -> float:
    """``value`` limited to the closed interval [0, 1]."""
    return 0.0 if value < 0 else 1.0 if value > 1 else value


def record_key(dataset: str, record: dict[str, Any]) -> str:
    """The stable key of a record.

    contacts/interactions: the lower-cased email; a contact without an email is keyed
    by a hash of its normalised name, org and role. Other datasets: ``id`` if present,
    else a hash of the canonical JSON of the record.
    """
    if dataset in ("contacts", "interactions"):
        email = normalise_email(record.get("email"))
        if email:
            return email
        parts = [
            unicodedata.normalize("NFKC", str(record.get(f) or "")).strip().lower()
            for f in ("name", "org", "role")
        ]
        return "nameorg:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    rid = record.get("id")
    if isinstance(rid, (str, int)) and str(rid):
        return f"id:{rid}"
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
