"""RFC 9421 signature bases, written against the RFC's own vectors.

This module is the generic part: it rebuilds the signature base of any request or response
from its covered components, every derived component included (``@query-param;name=``,
``@status``, ``;req``). The AAuth profile, which is much narrower, lives in
:mod:`darkmesh_aauth.verifier` and :mod:`darkmesh_aauth.signer`; its two algorithms are
:func:`darkmesh_aauth.keys.verify_raw` and :meth:`darkmesh_aauth.keys.SigningKey.sign`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from darkmesh_aauth.sfv import (
    SFError,
    parse_dictionary,
    serialize_dictionary,
    serialize_item,
    serialize_member,
)
from sdl_core import normalise_authority

#: Fields whose structured type is a Dictionary (for ``;sf`` and ``;key``).
DICTIONARY_FIELDS = frozenset({
    "signature", "signature-input", "signature-key", "content-digest", "repr-digest",
    "want-content-digest", "accept-signature", "signature-error", "example-dict", "cache-status",
})

Component = tuple[str, dict[str, Any]]


class ComponentError(ValueError):
    """A covered component cannot be computed. ``code`` is the AAuth reason code."""

    def __init__(self, message: str, code: str = "signature_malformed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class Message:
    """The parts of an HTTP message a signature base can cover.

    ``path`` and ``query`` are as sent (percent-encoding untouched); ``query`` is None when
    the target has no ``?``. ``headers`` are ``(name, value)`` pairs, any case, in order.
    """

    method: str = ""
    scheme: str = "https"
    authority: str = ""
    path: str = "/"
    query: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    status: int | None = None
    request: Message | None = None

    @classmethod
    def from_url(cls, method: str, url: str, headers: Sequence[tuple[str, str]] = ()) -> Message:
        parts = urlsplit(url)
        query = parts.query if "?" in url else None
        return cls(method=method, scheme=parts.scheme or "https",
                   authority=normalise_authority(parts.netloc, parts.scheme or "https"),
                   path=parts.path or "/", query=query, headers=tuple(headers))

    def header_lines(self, name: str) -> list[str]:
        """Every instance of a field, trimmed, in order (RFC 9421 §2.1)."""
        lower = name.lower()
        return [v.strip() for k, v in self.headers if k.lower() == lower]


# ----------------------------------------------------------------- components


def component_id(name: str, params: dict[str, Any]) -> str:
    """The component identifier as it appears in the base: ``"@query-param";name="Pet"``."""
    return serialize_item(name, params)


def _query_param(message: Message, params: dict[str, Any]) -> str:
    wanted = params.get("name")
    if not isinstance(wanted, str):
        raise ComponentError("@query-param needs a String name parameter")
    found: list[str] = []
    for pair in (message.query or "").split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if unquote_plus(key) == wanted:
            found.append(value)
    if len(found) != 1:
        # RFC 9421 §2.2.8: absent is an error; repeated must not be signed this way.
        raise ComponentError(f"query parameter {wanted!r} occurs {len(found)} times")
    return quote(unquote_plus(found[0]), safe="")


def _derived(message: Message, name: str, params: dict[str, Any]) -> str:
    if name != "@query-param" and params:
        raise ComponentError(f"{name} takes no parameters")
    query = message.query
    if name == "@method":
        return message.method
    if name == "@authority":
        return normalise_authority(message.authority, message.scheme)
    if name == "@scheme":
        return message.scheme.lower()
    if name == "@path":
        return message.path or "/"
    if name == "@query":
        return "?" + (query or "")
    if name == "@request-target":
        return (message.path or "/") + (f"?{query}" if query is not None else "")
    if name == "@target-uri":
        authority = normalise_authority(message.authority, message.scheme)
        target = (message.path or "/") + (f"?{query}" if query is not None else "")
        return f"{message.scheme.lower()}://{authority}{target}"
    if name == "@query-param":
        return _query_param(message, params)
    if name == "@status":
        if message.status is None:
            raise ComponentError("@status is only defined for responses")
        return str(message.status)
    raise ComponentError(f"unknown derived component {name}")


def _field(message: Message, name: str, params: dict[str, Any]) -> str:
    known = {"sf", "key", "bs", "req"}
    if set(params) - known:
        raise ComponentError(f"unsupported component parameters {sorted(set(params) - known)}")
    if params.get("req"):
        if message.request is None:
            raise ComponentError(f"{name};req needs the request message")
        message = message.request
    lines = message.header_lines(name)
    if not lines:
        raise ComponentError(f"header {name!r} is covered but absent", "component_header_missing")
    for line in lines:
        if not line.isascii():
            raise ComponentError(f"header {name!r} is not ASCII")
    if params.get("bs"):
        if "sf" in params or "key" in params:
            raise ComponentError("bs cannot be combined with sf or key")
        return ", ".join(":" + base64.b64encode(line.encode("ascii")).decode() + ":"
                         for line in lines)
    combined = ", ".join(lines)
    if "key" in params:
        try:
            parsed = parse_dictionary(combined)
        except SFError as exc:
            raise ComponentError(f"header {name!r} is not a dictionary: {exc}") from None
        member = parsed.get(params["key"])
        if member is None:
            raise ComponentError(f"dictionary {name!r} has no member {params['key']!r}")
        return serialize_member(member)
    if params.get("sf"):
        if name.lower() not in DICTIONARY_FIELDS:
            raise ComponentError(f"structured type of {name!r} is not known")
        try:
            return serialize_dictionary(parse_dictionary(combined))
        except SFError as exc:
            raise ComponentError(f"header {name!r} is not a dictionary: {exc}") from None
    return combined


def component_value(message: Message, name: str, params: dict[str, Any]) -> str:
    """The value of one covered component (RFC 9421 §2.1–2.2)."""
    if name.startswith("@"):
        return _derived(message, name, params)
    return _field(message, name, params)


def signature_base(message: Message, components: Sequence[Component], params_value: str) -> str:
    """Lines ``"<id>": <value>``, LF-separated, then ``"@signature-params"``; no final LF."""
    lines = []
    seen: set[str] = set()
    for name, params in components:
        identifier = component_id(name, params)
        if identifier in seen:
            raise ComponentError(f"component {identifier} is covered twice")
        seen.add(identifier)
        value = component_value(message, name, params)
        if "\n" in value or "\r" in value:
            raise ComponentError(f"component {identifier} contains a line break")
        lines.append(f"{identifier}: {value}")
    lines.append(f'"@signature-params": {params_value}')
    return "\n".join(lines)
