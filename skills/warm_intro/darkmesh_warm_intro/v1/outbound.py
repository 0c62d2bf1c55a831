"""Calls to peer URLs taken from v1 messages, without leaking the peer key (§10.1 item 5).

v1 names callback URLs inside messages (``requester_url`` in a post, ``responder_url`` in
an answer), so both are attacker-chosen. DESIGN §11 "Keys and peers": the shared peer
key goes only to a configured peer (``[[node.peers]]``), or to message URLs when the
operator opted into upstream behaviour (``warm_intro.v1_trust_message_urls``). Signed
calls carry no secret and may go to any http(s) URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from darkmesh_warm_intro.context import WarmIntroContext

log = logging.getLogger("darkmesh.warm_intro.v1")

MAX_URL_LENGTH = 2048
#: Largest answer body read from a peer; a v1 answer or intro is a few KiB.
MAX_RESPONSE_BYTES = 256 * 1024
PEER_TIMEOUT_SECONDS = 8.0

_URL_SHAPE = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", re.IGNORECASE)


class CallRefused(Exception):
    """The URL is unusable, or no safe way to authenticate to it exists."""


class PeerCallFailed(Exception):
    """Transport error, timeout, non-2xx, or a body that is not a JSON object."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def clean_base_url(value: object) -> str | None:
    """A message URL usable as a base: http(s), a host, no query/fragment/userinfo,
    bounded, trailing ``/`` stripped (wire-v1 §0). None when unusable."""
    if not isinstance(value, str):
        return None
    url = value.strip().rstrip("/")
    if not url or len(url) > MAX_URL_LENGTH or not _URL_SHAPE.match(url):
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if "@" in parts.netloc:
        return None
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return url


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


@dataclass(frozen=True, kw_only=True)
class CallPlan:
    """How to call one URL: signed, or with the peer key in ``headers``, or neither."""

    sign: bool
    headers: dict[str, str] = field(default_factory=dict)


def plan_call(ctx: WarmIntroContext, base_url: str) -> CallPlan:
    """Decide the authentication for a call to ``base_url`` (raises :class:`CallRefused`)."""
    host = ctx.host
    peer = None
    target = _origin(base_url)
    for candidate in host.settings.peers:
        if _origin(candidate.url) == target:
            peer = candidate
            break
    signing = host.signing_enabled("node")
    key = host.settings.peer_key.get_secret_value()
    if peer is not None and peer.auth == "aauth":
        if not signing:
            raise CallRefused(
                f"peer {peer.node_id} needs signed calls ([[node.peers]] auth = \"aauth\") "
                "but this node does not sign (install darkmesh-aauth, set a node key)"
            )
        return CallPlan(sign=True)
    if peer is not None and peer.auth == "hmac":
        return CallPlan(sign=False, headers={"X-Darkmesh-Key": key} if key else {})
    if signing:
        return CallPlan(sign=True)
    if peer is not None or ctx.settings.v1_trust_message_urls:
        return CallPlan(sign=False, headers={"X-Darkmesh-Key": key} if key else {})
    raise CallRefused(
        f"{base_url} is not a configured peer and this node does not sign; add it to "
        "[[node.peers]], enable AAuth signing (darkmesh-aauth), or set "
        "DARKMESH_WARM_INTRO_V1_TRUST_MESSAGE_URLS=true to send the peer key to message URLs"
    )


async def post_json(
    ctx: WarmIntroContext, base_url: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST ``body`` to ``base_url + path`` under :func:`plan_call`; the JSON object answer.

    :raises CallRefused: no safe way to call that URL.
    :raises PeerCallFailed: the call failed (transport, timeout, non-2xx, bad body).
    """
    plan = plan_call(ctx, base_url)
    url = base_url + path
    try:
        # httpx timeouts are per operation; the deadline bounds the whole call (a peer
        # dripping bytes cannot hold a consent or the listener for long).
        async with asyncio.timeout(PEER_TIMEOUT_SECONDS), ctx.host.http_client(
            role="node", timeout=PEER_TIMEOUT_SECONDS, sign=plan.sign
        ) as client, client.stream("POST", url, json=body, headers=plan.headers) as response:
            raw = await _read_capped(response)
            status = response.status_code
    except (httpx.TimeoutException, TimeoutError):
        raise PeerCallFailed(f"timeout after {PEER_TIMEOUT_SECONDS:g}s") from None
    except httpx.HTTPError as exc:
        raise PeerCallFailed(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise PeerCallFailed(f"HTTP {status}: {_detail(raw)}", status=status)
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PeerCallFailed("answer is not JSON", status=status) from None
    if not isinstance(value, dict):
        raise PeerCallFailed("answer is not a JSON object", status=status)
    return value


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise PeerCallFailed(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _detail(raw: bytes) -> str:
    """The peer's ``detail`` string if it sent one, else a short excerpt (never huge)."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw[:200].decode("utf-8", "replace") or "(empty body)"
    if isinstance(value, dict) and isinstance(value.get("detail"), str):
        return str(value["detail"])[:200]
    return json.dumps(value)[:200]
