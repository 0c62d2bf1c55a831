"""``@authority`` values: normalised ``host[:port]`` (``spec/aauth.md`` §1.4, §2.1).

The core owns these because the auth guard takes the accepted authorities from
configuration (never the ``Host`` header); signers and verifiers use the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise_authority(value: str, scheme: str = "http") -> str:
    """Lower-case host, default port dropped, other ports kept, IPv6 bracketed.

    A full URL is reduced to its authority (userinfo dropped).
    """
    value = value.strip()
    if "://" in value:
        parts = urlsplit(value)
        scheme, value = parts.scheme or scheme, parts.netloc
    value = value.rsplit("@", 1)[-1].lower()
    host, port = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"invalid authority {value!r}")
        host, rest = value[: end + 1], value[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    elif value.count(":") > 1:
        host = f"[{value}]"
    if not host or (port and not port.isdigit()):
        raise ValueError(f"invalid authority {value!r}")
    if port and port == DEFAULT_PORTS.get(scheme.lower()):
        port = ""
    return f"{host}:{port}" if port else host


def split_authority(authority: str) -> tuple[str, str]:
    """``("host", "port")``; port is ``""`` when absent."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :]
        return authority[: end + 1], rest[1:] if rest.startswith(":") else ""
    host, _, port = authority.partition(":")
    return host, port


def is_loopback(authority: str) -> bool:
    """True for ``localhost``, ``127.0.0.1`` and ``[::1]``, with or without a port."""
    return split_authority(authority)[0] in LOOPBACK_HOSTS


def expand_loopback(authorities: Iterable[str]) -> list[str]:
    """Each authority; a loopback one also in the other two loopback spellings."""
    out: list[str] = []
    for authority in authorities:
        host, port = split_authority(authority)
        spellings = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else (host,)
        for spelling in spellings:
            candidate = f"{spelling}:{port}" if port else spelling
            if candidate not in out:
                out.append(candidate)
    return out


def authorities_from_url(url: str) -> list[str]:
    """The default accepted authorities of a node's ``listen_url`` / relay's ``public_url``."""
    parts = urlsplit(url)
    return expand_loopback([normalise_authority(parts.netloc, parts.scheme or "http")])
