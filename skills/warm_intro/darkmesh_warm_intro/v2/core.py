"""What the v2 requester and responder share: keys, pins, sealed sending, refusals."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.sealing import (
    SEEN_PREFIX,
    KeyPins,
    NodeKeys,
    Opened,
    SealError,
    open_sealed,
    seal,
)
from sdl_core import HTTPProblem

log = logging.getLogger("darkmesh.warm_intro.v2")

TEMPLATE = "warm_intro_v2"
AUDIT_PREFIX = "v2:audit:"
#: How long a sealed message id is remembered to refuse replays.
SEEN_TTL_SECONDS = 7 * 24 * 3600
#: Message kinds that may come from a node whose key is not pinned yet.
FIRST_CONTACT_KINDS = ("psi_reply", "refusal")


class Refused(Exception):
    """A v2 message was refused; ``reason`` is a stable code, nothing was changed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail or reason
        super().__init__(f"{reason}: {self.detail}")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of one mailbox message (tests and the status page read these)."""

    accepted: bool
    kind: str
    sender: str
    request_id: str
    reason: str = ""
    detail: str = ""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class V2Core:
    """Keys, pins, the sealed mailbox, the audit log and the refusal record."""

    def __init__(self, ctx: WarmIntroContext) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.pins = KeyPins(ctx.state)
        self._keys: NodeKeys | None = None
        self.outcomes: deque[Outcome] = deque(maxlen=200)

    @property
    def node_id(self) -> str:
        return self.ctx.node_id

    @property
    def keys(self) -> NodeKeys:
        if self._keys is None:
            self._keys = NodeKeys.load_or_create(self.state)
        return self._keys

    # ------------------------------------------------------------------ sending

    async def send(self, *, to: str, to_key: bytes, request_id: str, kind: str,
                   body: dict[str, Any]) -> None:
        """Seal ``body`` to ``to`` and post it to its relay mailbox.

        :raises HTTPProblem: 503 without a relay, 502 when the relay refuses, 400 when
            ``to_key`` is no usable X25519 key.
        """
        relay = self.ctx.host.relay
        if relay is None:
            raise HTTPProblem(503, "relay_url not configured (DARKMESH_RELAY_URL)",
                              reason="no_relay")
        try:
            payload = seal(self.keys, sender=self.node_id, recipient=to, recipient_key=to_key,
                           request_id=request_id, kind=kind, body=body)
        except ValueError as exc:
            # A low-order key from a hostile post makes X25519 refuse the exchange.
            raise HTTPProblem(400, f"cannot seal to {to!r}: {exc}",
                              reason="invalid_recipient_key") from None
        try:
            await relay.mailbox_send(to, request_id, payload)
        except HTTPProblem:
            raise
        except Exception as exc:
            raise HTTPProblem(502, f"Relay error: {type(exc).__name__}: {exc}",
                              reason="relay_error") from exc
        self.ctx.count_message("sent")

    # ---------------------------------------------------------------- receiving

    def open_message(self, sender: str, sender_verified: bool, request_id: str,
                     payload_b64: str) -> Opened:
        """Decode, open and authenticate one mailbox message.

        :raises Refused: malformed, misaddressed, forged, from another sender than the
            relay authenticated, with a changed key, or a replay.
        """
        try:
            payload = base64.b64decode(payload_b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, AttributeError):
            raise Refused("malformed", "mailbox payload is not base64") from None
        try:
            opened = open_sealed(self.keys, payload, recipient=self.node_id)
        except SealError as exc:
            raise Refused(exc.reason, str(exc)) from None
        if sender_verified and sender != opened.sender:
            raise Refused("sender_mismatch",
                          f"relay authenticated {sender!r}, message claims {opened.sender!r}")
        if opened.request_id != request_id:
            raise Refused("request_mismatch", "sealed request id differs from the envelope's")
        if opened.sender == self.node_id:
            raise Refused("own_message", "a message from this node to itself")
        try:
            known = self.pins.check(opened.sender, opened.sender_key)
        except SealError as exc:
            raise Refused(exc.reason, str(exc)) from None
        if not known and opened.kind not in FIRST_CONTACT_KINDS:
            # Only a responder's answer introduces its key; reveal traffic comes from
            # nodes this one already exchanged a request with.
            raise Refused("unknown_sender", f"no pinned key for {opened.sender!r}")
        if not self.state.remember_once(SEEN_PREFIX + opened.message_id, SEEN_TTL_SECONDS):
            raise Refused("replayed", "this sealed message was already received")
        return opened

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if not outcome.accepted:
            log.warning("v2 %s from %s for %s refused: %s (%s)", outcome.kind, outcome.sender,
                        outcome.request_id, outcome.reason, outcome.detail)

    # -------------------------------------------------------------------- audit

    def audit(self, entry: dict[str, Any]) -> None:
        """Append to the durable reveal audit log (both sides)."""
        key = f"{AUDIT_PREFIX}{time.time():017.6f}:{entry['request_id']}:{entry['side']}"
        self.state.put(key, entry)

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        entries = [value for _, value in self.state.items(AUDIT_PREFIX)]
        return entries[-limit:]

