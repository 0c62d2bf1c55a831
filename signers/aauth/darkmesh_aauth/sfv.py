"""RFC 8941 structured fields through http-sf, with the strictness this profile needs.

http-sf keeps Integer, String, Token and Byte Sequence apart (``aauth.md`` §8), which the
verifier relies on to rebuild ``@signature-params`` byte for byte.
"""

from __future__ import annotations

from typing import Any

import http_sf
from http_sf import Token

__all__ = [
    "SFError",
    "Token",
    "parse_dictionary",
    "serialize_dictionary",
    "serialize_item",
    "serialize_member",
]


class SFError(ValueError):
    """A header is not the structured field it must be."""


def _refuse_duplicate(key: str, context: str) -> None:
    raise SFError(f"duplicate key {key!r}")


def parse_dictionary(value: str) -> dict[str, Any]:
    """Parse a Dictionary; duplicate keys are an error here (RFC 8941 lets the last win,
    which would let two members hide behind one)."""
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary",
                               on_duplicate_key=_refuse_duplicate)
    except SFError:
        raise
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError) as exc:
        raise SFError(str(exc)) from None
    if not isinstance(parsed, dict):
        raise SFError("not a dictionary")
    return parsed


def serialize_dictionary(value: dict[str, Any]) -> str:
    return http_sf.ser(value)


def serialize_member(member: Any) -> str:
    """Serialize one Dictionary member value (an Item or an Inner List, with parameters)."""
    return http_sf.ser({"m": member})[2:]


def serialize_item(value: Any, params: dict[str, Any] | None = None) -> str:
    return http_sf.ser((value, params or {}))
