"""Protocol v2 (``warm_intro_v2``): ristretto255 PSI, sealed relay mailboxes, consent on
both sides. See ``exchange`` (the PSI), ``sealing`` (the mailbox crypto), ``requester``
and ``responder`` (the stateful halves).

Mailbox addressing: every v2 message goes to the recipient's node id (``to`` =
requester node id for replies, responder node id for reveal requests); the sealed
envelope, not the relay, authenticates the sender.
"""

from __future__ import annotations

from typing import Any

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.v2.core import TEMPLATE, Outcome, Refused, V2Core
from darkmesh_warm_intro.v2.requester import Requester
from darkmesh_warm_intro.v2.responder import Responder
from sdl_core import MailboxMessage

__all__ = ["TEMPLATE", "Outcome", "V2Protocol"]


class V2Protocol:
    """Both halves of v2 behind one object the skill dispatches to."""

    def __init__(self, ctx: WarmIntroContext) -> None:
        self.core = V2Core(ctx)
        self.requester = Requester(self.core)
        self.responder = Responder(self.core)

    async def start(self) -> None:
        _ = self.core.keys  # create the long-term key before the first post
        await self.responder.flush_outbox()

    async def handle_post(self, post: dict[str, Any]) -> Outcome:
        return await self.responder.handle_post(post)

    async def handle_mailbox(self, message: MailboxMessage) -> Outcome:
        """Open, authenticate and dispatch one mailbox message (never raises)."""
        kind = "?"
        sender = message.sender
        self.core.ctx.count_message("received")
        try:
            opened = self.core.open_message(message.sender, message.sender_verified,
                                            message.request_id, message.payload)
            kind, sender = opened.kind, opened.sender
            if kind in ("psi_reply", "refusal"):
                self.requester.on_reply(opened)
            elif kind == "reveal_request":
                await self.responder.on_reveal_request(opened)
            else:
                await self.requester.on_reveal_response(opened)
            self.core.pins.pin(opened.sender, opened.sender_key)  # first contact, accepted
            outcome = Outcome(accepted=True, kind=kind, sender=sender,
                              request_id=message.request_id)
        except Refused as exc:
            outcome = Outcome(accepted=False, kind=kind, sender=sender,
                              request_id=message.request_id, reason=exc.reason, detail=exc.detail)
        self.core.record(outcome)
        return outcome

    def status(self) -> dict[str, Any]:
        pins = self.core.pins.listing()
        return {
            "template": TEMPLATE,
            "key_fingerprint": self.core.keys.fingerprint,
            "pinned_keys": len(pins["pinned"]),
            "key_changes_pending": [c["node_id"] for c in pins["pending_changes"]],
            "pending_approvals": len(self.responder.pending_approvals()),
            "refused_recently": sum(1 for o in self.core.outcomes if not o.accepted),
        }
