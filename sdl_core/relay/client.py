"""The relay client nodes and skills use: skills never build relay URLs themselves.

``RelayClient(host)`` talks to ``host.settings.relay_url`` through the node's transport.
Authentication per call, decided by ``relay_outbound_auth``:

* ``auto``: sign when the node can sign (``host.signing_enabled()``), else shared key;
* ``hmac``: always the shared key;
* ``aauth``: always sign (an error when no node key is configured).

A signed call never carries the shared key. An unsigned call puts ``relay_key`` in POST
bodies and ``X-Darkmesh-Key`` on GETs and mailbox calls. The relay URL is configured
by the operator, so the relay key may go there (``wire-v1.md`` §10.1 item 5 concerns
URLs taken from messages). Unlike upstream, the node key never goes to the relay.

Every failure raises :class:`RelayError`: ``status`` is the HTTP status, or 0 when no
answer arrived (connection refused, timeout).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from sdl_core.errors import DarkmeshError
from sdl_core.protocols import JSONObject, MailboxMessage
from sdl_core.relay.models import MAX_ACK_IDS

if TYPE_CHECKING:
    from sdl_core.host import Host

log = logging.getLogger("darkmesh.relay.client")

#: Upstream's client timeouts (``wire-v1.md`` §6): register 5 s, publish 8 s, pull 10 s.
REGISTER_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 8.0
PULL_TIMEOUT = 10.0
#: Added to a long-poll's ``wait`` so the client never gives up before the relay answers.
LONG_POLL_MARGIN = 10.0


class RelayError(DarkmeshError):
    """A relay call failed. ``status`` is the HTTP status (0: no answer at all)."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"relay error {status}: {detail}" if status else f"relay error: {detail}")


class RelayClient:
    """Async client of one relay for one node (see the module docstring for auth)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._clients: dict[bool, httpx.AsyncClient] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def url(self) -> str:
        return str(self.host.settings.relay_url).rstrip("/")

    @property
    def node_id(self) -> str:
        return str(self.host.settings.node_id)

    def signing(self) -> bool:
        """Whether calls to the relay are signed (``relay_outbound_auth``)."""
        mode = self.host.settings.relay_outbound_auth
        if mode == "hmac":
            return False
        if mode == "aauth":
            if not self.host.signing_enabled("node"):
                raise RelayError(
                    0, "DARKMESH_RELAY_OUTBOUND_AUTH=aauth needs a node signing key "
                    "(darkmesh-aauth, DARKMESH_AAUTH_PRIVATE_JWK_PATH) and an auth mode "
                    "other than hmac",
                )
            return True
        return self.host.signing_enabled("node")

    def _client(self, signed: bool) -> httpx.AsyncClient:
        # One client per signing choice, kept for connection reuse; the transport is the
        # host's and outlives it.
        client = self._clients.get(signed)
        if client is None:
            client = self.host.http_client(
                role="node", base_url=self.url, timeout=PULL_TIMEOUT, sign=signed
            )
            self._clients[signed] = client
        return client

    def _shared_key(self) -> str:
        return str(self.host.settings.relay_key.get_secret_value())

    async def _call(
        self, method: str, path: str, *, body: JSONObject | None = None, timeout: float,
        key_in_header: bool = False,
    ) -> JSONObject:
        if not self.url:
            raise RelayError(0, "no relay configured (DARKMESH_RELAY_URL)")
        signed = self.signing()
        headers: dict[str, str] = {}
        if body is not None:
            body = dict(body)
        if not signed and self._shared_key():
            if body is not None:
                body["relay_key"] = self._shared_key()
            if body is None or key_in_header:
                headers["X-Darkmesh-Key"] = self._shared_key()
        try:
            response = await self._client(signed).request(
                method, f"/darkmesh/relay/{path}", json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise RelayError(
                0, f"relay {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else response.text[:500]
            raise RelayError(response.status_code, detail)
        if not isinstance(data, dict):
            raise RelayError(502, f"relay answered {path} with a non-object body")
        return data

    async def aclose(self) -> None:
        """Forget the client objects. They own nothing but the host's shared transport,
        which the host closes; closing them here would close it under other users."""
        self._clients.clear()

    # -------------------------------------------------------------------- calls

    async def register(
        self, capabilities: list[str] | None = None, aliases: Sequence[str] = ()
    ) -> JSONObject:
        """Register this node (``listen_url``, templates served, aliases)."""
        body: JSONObject = {
            "node_id": self.node_id,
            "url": self.host.settings.listen_url,
            "capabilities": list(capabilities) if capabilities is not None
            else self.host.templates(),
        }
        if aliases:
            body["aliases"] = list(aliases)
        return await self._call("POST", "nodes/register", body=body, timeout=REGISTER_TIMEOUT)

    async def publish(self, post: JSONObject) -> JSONObject:
        """Publish ``post``; returns ``{ok, post_id, seq, expires_at, live_nodes?}``."""
        return await self._call("POST", "posts", body=post, timeout=PUBLISH_TIMEOUT)

    async def pull(
        self, cursor: int, *, limit: int = 20, wait: float = 0,
        capabilities: Sequence[str] | None = None,
    ) -> JSONObject:
        """One pull from ``cursor``; with ``wait`` > 0 the relay holds it open.

        :returns: ``{node_id, cursor, posts, epoch}``; ``epoch`` is None for an upstream
            relay (which also ignores ``wait``).
        """
        body: JSONObject = {
            "node_id": self.node_id,
            "capabilities": list(capabilities) if capabilities is not None
            else self.host.templates(),
            "cursor": cursor,
            "limit": limit,
        }
        if wait > 0:
            body["wait"] = wait
        data = await self._call("POST", "posts/pull", body=body,
                                timeout=PULL_TIMEOUT + (wait + LONG_POLL_MARGIN if wait > 0 else 0))
        posts, new_cursor = data.get("posts"), data.get("cursor")
        if not isinstance(posts, list) or not isinstance(new_cursor, int) \
                or isinstance(new_cursor, bool):
            raise RelayError(502, "relay answered pull without an integer cursor and a post list")
        epoch = data.get("epoch")
        data["epoch"] = epoch if isinstance(epoch, str) and epoch else None
        data["posts"] = [p for p in posts if isinstance(p, dict)]
        return data

    async def list_nodes(self) -> list[JSONObject]:
        data = await self._call("GET", "nodes", timeout=PULL_TIMEOUT)
        nodes = data.get("nodes")
        return [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []

    async def mailbox_send(self, to: str, request_id: str, payload: bytes) -> JSONObject:
        """Send ``payload`` (bytes, base64-encoded on the wire) to a node id or alias."""
        body: JSONObject = {
            "to": to,
            "from": self.node_id,  # ignored by the relay when the call is signed
            "request_id": request_id,
            "payload": base64.b64encode(payload).decode("ascii"),
        }
        return await self._call("POST", "mailbox/send", body=body, timeout=PUBLISH_TIMEOUT,
                                key_in_header=True)

    async def mailbox_pull(self, *, wait: float = 0, limit: int = 50) -> list[MailboxMessage]:
        """This node's unacked messages, oldest first (redelivered until acked)."""
        body: JSONObject = {"node_id": self.node_id, "limit": limit}
        if wait > 0:
            body["wait"] = wait
        data = await self._call(
            "POST", "mailbox/pull", body=body, key_in_header=True,
            timeout=PULL_TIMEOUT + (wait + LONG_POLL_MARGIN if wait > 0 else 0),
        )
        raw = data.get("messages")
        if not isinstance(raw, list):
            raise RelayError(502, "relay answered mailbox/pull without a message list")
        return [_message(item) for item in raw]

    async def mailbox_ack(self, ids: Sequence[str]) -> int:
        """Ack (remove) messages; returns how many the relay removed."""
        acked = 0
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), MAX_ACK_IDS):
            body: JSONObject = {"node_id": self.node_id,
                                "ids": unique[start:start + MAX_ACK_IDS]}
            data = await self._call("POST", "mailbox/ack", body=body, timeout=PUBLISH_TIMEOUT,
                                    key_in_header=True)
            value = data.get("acked")
            acked += value if isinstance(value, int) else 0
        return acked


def _message(item: Any) -> MailboxMessage:
    try:
        return MailboxMessage(
            id=str(item["id"]), to=str(item["to"]), sender=str(item["from"]),
            sender_verified=bool(item["from_verified"]), request_id=str(item["request_id"]),
            payload=str(item["payload"]), created_at=float(item["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RelayError(502, f"relay answered a malformed mailbox message: {exc}") from None


def decode_payload(message: MailboxMessage) -> bytes:
    """The raw bytes of a message's payload (the relay keeps it base64)."""
    return base64.b64decode(message.payload)
