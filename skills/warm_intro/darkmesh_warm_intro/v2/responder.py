"""The v2 responder: answer every blinded request, hold reveals for approval.

Every valid post gets exactly one sealed answer of the same shape whether or not
this node knows someone at the target (DESIGN §6 item 2); a post beyond the
requester's budget, with invalid elements or an empty target gets a sealed
``refusal`` instead, so the requester still counts an answer and returns early
(DESIGN §6 item 6). So does a post this node cannot evaluate, whenever it can still
seal to the requester: a malformed ``psi`` block or protocol (to the post's key, else
the pinned one) and a changed key (``key_changed``, to the post's key, which only its
author holds). A refusal carries only ``{reason}``: no budget spent, nothing pinned.

Silent, by necessity: a post without a usable ``request_id`` or ``requester_id`` (no
mailbox and no request to answer), and a malformed post from a node with neither a
valid key in the post nor a pin (nothing to seal to; an unsealed answer could be
forged by anyone to end a request early). The requester's deadline covers those.

State (``host.state("warm_intro")``):

* ``v2:tok:<sha256(token)>``: a reveal token bound to the request id, the requester's
  node id and pinned key fingerprint, the normalised target and the chosen contact;
  single use, expiring (``reveal_token_ttl_seconds``);
* ``v2:appr:<approval_id>``: a reveal waiting for the operator (policy ``manual``);
* ``v2:budget:<requester>:<window>``: requests answered per budget window;
* ``v2:outbox:<id>``: sealed answers not yet accepted by the relay (retried).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import secrets
import time
from typing import Any, NoReturn

from darkmesh_warm_intro import psi
from darkmesh_warm_intro.matching import NEXT_STEP, Target, choose_contact, target_strength
from darkmesh_warm_intro.sealing import Opened, SealError, b64d, b64e, fingerprint
from darkmesh_warm_intro.v2 import exchange
from darkmesh_warm_intro.v2.core import TEMPLATE, Outcome, Refused, V2Core, utc_now_iso
from sdl_core import HTTPProblem, IntroRevealed

log = logging.getLogger("darkmesh.warm_intro.v2")

TOKEN_PREFIX = "v2:tok:"
APPROVAL_PREFIX = "v2:appr:"
BUDGET_PREFIX = "v2:budget:"
OUTBOX_PREFIX = "v2:outbox:"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: Refusals after which the requester hears nothing: its candidate is already final.
SILENT_REFUSALS = ("reveal_token_used",)


def _token_key(token: str) -> str:
    return TOKEN_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


class Responder:
    def __init__(self, core: V2Core) -> None:
        self.core = core
        self.state = core.state

    @property
    def settings(self) -> Any:
        return self.core.ctx.settings

    # ------------------------------------------------------------------- posts

    async def handle_post(self, post: dict[str, Any]) -> Outcome:
        """Answer one ``warm_intro_v2`` post; never raises for a hostile post."""
        request_id = post.get("request_id")
        requester = post.get("requester_id")
        label = request_id if isinstance(request_id, str) else "?"
        who = requester if isinstance(requester, str) else "?"
        try:
            outcome = await self._answer(post)
        except Refused as exc:
            outcome = Outcome(accepted=False, kind="post", sender=who, request_id=label,
                              reason=exc.reason, detail=exc.detail)
        self.core.record(outcome)
        return outcome

    async def _answer(self, post: dict[str, Any]) -> Outcome:
        request_id, requester = post.get("request_id"), post.get("requester_id")
        if not isinstance(request_id, str) or not ID_PATTERN.match(request_id):
            raise Refused("malformed", "request_id missing or not URL-safe")
        if not isinstance(requester, str) or not ID_PATTERN.match(requester):
            raise Refused("malformed", "requester_id missing or invalid")
        if requester == self.core.node_id:
            raise Refused("own_post", "a post of this node")
        data = post.get("psi")
        try:
            requester_key = b64d(data.get("requester_key") if isinstance(data, dict) else None,
                                 "psi.requester_key", length=32)
        except SealError as exc:
            # No key in the post: only a pinned key can still carry an answer.
            await self._refuse(requester, self.core.pins.pinned(requester), request_id,
                               "malformed", str(exc))
        try:
            self.core.pins.check(requester, requester_key)
        except SealError as exc:
            # The post's key is the one its author holds (the pinned one's holder may not
            # have posted at all), so the refusal goes to it; it carries only the reason.
            await self._refuse(requester, requester_key, request_id, exc.reason, str(exc))
        if not isinstance(data, dict) or data.get("protocol") != exchange.PROTOCOL:
            await self._refuse(requester, requester_key, request_id, "malformed",
                               f"psi.protocol must be {exchange.PROTOCOL}")
        limit = psi.bucket_size(min(self.settings.max_contacts, psi.MAX_ELEMENTS))
        budget = self._spend_budget(requester)
        refusal = await self._check_post(data, post.get("target"), limit, budget)
        if isinstance(refusal, str):
            await self._send_now(to=requester, to_key=requester_key, request_id=request_id,
                                 kind="refusal", body={"reason": refusal, "budget": budget})
            self.core.ctx.count_intro("answered", TEMPLATE)
            return Outcome(accepted=False, kind="post", sender=requester, request_id=request_id,
                           reason=refusal.split(":", 1)[0], detail=refusal)
        elements, target = refusal
        payload = await self._payload(request_id, requester, requester_key, target)
        reply = await asyncio.to_thread(
            exchange.build_reply, elements=elements,
            own_identifiers=self.core.ctx.host.settings.self_identifiers, payload=payload,
            context=exchange.binding(request_id, requester, self.core.node_id),
        )
        await self._send_now(to=requester, to_key=requester_key, request_id=request_id,
                             kind="psi_reply",
                             body={"protocol": exchange.PROTOCOL, "y": b64e(reply.y_blob),
                                   "entries": b64e(reply.entries),
                                   "payload": b64e(reply.ciphertext), "budget": budget})
        self.core.ctx.count_intro("answered", TEMPLATE)
        self.core.pins.pin(requester, requester_key)  # first contact, answered
        return Outcome(accepted=True, kind="post", sender=requester, request_id=request_id)

    async def _refuse(self, requester: str, key: bytes | None, request_id: str,
                      reason: str, detail: str) -> NoReturn:
        """Answer a post that cannot be evaluated with a sealed ``refusal`` carrying only
        ``reason``, so the requester counts an answer and returns before its deadline
        (DESIGN §6 item 6); then raise :class:`Refused` for the record.

        Without a key (``key`` is None: the post carries no valid ``psi.requester_key``
        and no key is pinned for ``requester``) nothing is sent. An answer must be sealed
        to the requester and authenticated by this node: an unsealed one would travel in
        clear through the relay and could be forged by anyone to end a request early, so
        the requester's deadline covers that case. Nothing is pinned and no budget spent.
        """
        if key is not None:
            try:
                await self._send_now(to=requester, to_key=key, request_id=request_id,
                                     kind="refusal", body={"reason": reason})
                self.core.ctx.count_intro("answered", TEMPLATE)
            except Refused as exc:
                log.warning("v2 refusal (%s) to %s not sent: %s", reason, requester,
                            exc.detail)
        raise Refused(reason, detail)

    async def _check_post(self, data: dict[str, Any], raw_target: Any, limit: int,
                          budget: dict[str, int]) -> str | tuple[list[bytes], Target]:
        """The refusal reason, or the validated elements and target."""
        if budget["used"] > budget["limit"]:
            return "budget_exceeded"
        encoded = data.get("elements")
        if not isinstance(encoded, str) or len(encoded) > (limit * psi.ELEMENT_BYTES * 4) // 3 + 4:
            return f"too_many_elements: more than {limit}"
        try:
            blob = base64.b64decode(encoded.encode("ascii"), validate=True)
            elements = await asyncio.to_thread(psi.decode_elements, blob, limit=limit)
        except (binascii.Error, UnicodeEncodeError):
            return "invalid_elements: not base64"
        except psi.InvalidElement as exc:
            return f"invalid_elements: {exc}"
        if len(elements) not in psi.SIZE_BUCKETS:
            return "invalid_elements: count is not a size bucket"
        target = Target.from_json(raw_target)
        if target.empty:
            return "empty_target"
        return elements, target

    def _spend_budget(self, requester: str) -> dict[str, int]:
        window = self.settings.budget_window_seconds
        key = f"{BUDGET_PREFIX}{requester}:{int(time.time() // window)}"
        used = int(self.state.get(key, 0)) + 1
        self.state.put(key, used, ttl=2 * window)
        return {"used": used, "limit": self.settings.budget_requests, "window_seconds": window}

    async def _payload(self, request_id: str, requester: str, requester_key: bytes,
                       target: Target) -> dict[str, Any]:
        contacts = await self.core.ctx.contacts()
        chosen = choose_contact(contacts, target)
        strength = target_strength(contacts, target)
        if chosen is None or strength is None:
            return {"match": False}  # same ciphertext size: padded by the exchange
        token = secrets.token_urlsafe(24)
        pseudonym = "p_" + secrets.token_hex(8)
        self.state.put(_token_key(token), {
            "request_id": request_id, "requester_id": requester,
            "requester_key": fingerprint(requester_key), "target": target.to_json(),
            "target_key": target.key(), "contact_email": chosen.email,
            "contact": chosen.intro_contact(),
            "pseudonym_id": pseudonym, "state": "issued", "created_at": time.time(),
        }, ttl=self.settings.reveal_token_ttl_seconds)
        return {"match": True, "pseudonym_id": pseudonym, "reveal_token": token,
                "target_strength": round(strength, 3)}

    # --------------------------------------------------------------- delivery

    async def _send_now(self, *, to: str, to_key: bytes, request_id: str, kind: str,
                        body: dict[str, Any]) -> None:
        """Answers to a post are only useful before the requester's deadline: sent once,
        never queued (a failure is logged; the requester's deadline covers it)."""
        try:
            await self.core.send(to=to, to_key=to_key, request_id=request_id, kind=kind,
                                 body=body)
        except HTTPProblem as exc:
            raise Refused("send_failed", str(exc.detail)) from None

    async def _deliver(self, *, to: str, to_key: bytes, request_id: str, kind: str,
                       body: dict[str, Any]) -> None:
        """Send a reveal decision through the outbox: kept until the relay accepts it,
        retried at start-up and before each decision."""
        key = f"{OUTBOX_PREFIX}{time.time():017.6f}:{secrets.token_hex(4)}"
        entry = {"to": to, "to_key": b64e(to_key), "request_id": request_id, "kind": kind,
                 "body": body}
        self.state.put(key, entry, ttl=self.settings.reveal_token_ttl_seconds)
        try:
            await self.core.send(to=to, to_key=to_key, request_id=request_id, kind=kind,
                                 body=body)
        except HTTPProblem as exc:
            log.warning("v2 %s to %s queued for retry: %s", kind, to, exc.detail)
            raise
        self.state.delete(key)

    async def flush_outbox(self) -> int:
        """Retry queued answers (at start-up and before each decision); returns sent."""
        sent = 0
        for key, entry in self.state.items(OUTBOX_PREFIX):
            try:
                await self.core.send(to=entry["to"], to_key=base64.b64decode(entry["to_key"]),
                                     request_id=entry["request_id"], kind=entry["kind"],
                                     body=entry["body"])
            except HTTPProblem:
                break
            self.state.delete(key)
            sent += 1
        return sent

    # ---------------------------------------------------------------- reveals

    async def on_reveal_request(self, opened: Opened) -> None:
        """Check the token binding, then reveal, hold for approval or decline."""
        try:
            token_key, token = self._bound_token(opened)
        except Refused as exc:
            if exc.reason not in SILENT_REFUSALS:
                await self._respond(opened.sender, opened.request_id,
                                    {"state": "declined", "reason": exc.reason})
            raise
        policy = self._policy(opened.sender)
        if policy == "deny":
            await self._decline(token_key, token, "declined")  # token bound to this sender
            return
        if policy == "auto":
            await self._reveal(token_key, token)
            return
        approval_id = "v2-" + secrets.token_hex(6)
        token["state"] = "pending"
        token["approval_id"] = approval_id
        self._save_token(token_key, token)
        self.state.put(APPROVAL_PREFIX + approval_id, {
            "approval_id": approval_id, "token_key": token_key, "state": "pending",
            "created_at": time.time(),
        }, ttl=self.settings.reveal_token_ttl_seconds)

    def _bound_token(self, opened: Opened) -> tuple[str, dict[str, Any]]:
        raw = opened.body.get("reveal_token")
        if not isinstance(raw, str) or not raw or len(raw) > 128:
            raise Refused("missing_reveal_token", "reveal_token is required")
        token_key = _token_key(raw)
        token = self.state.get(token_key)
        if token is None:
            raise Refused("invalid_reveal_token", "unknown, expired or forged reveal token")
        target = Target.from_json(opened.body.get("target"))
        if (token["request_id"] != opened.request_id
                or token["requester_id"] != opened.sender
                or token["requester_key"] != fingerprint(opened.sender_key)
                or target.empty or token["target_key"] != target.key()):
            raise Refused("reveal_token_mismatch",
                          "token is bound to another request, requester or target")
        if token["state"] != "issued":
            raise Refused("reveal_token_used", f"token already {token['state']}")
        return token_key, dict(token)

    def _policy(self, requester: str) -> str:
        for rule in self.settings.requester_rules:
            if rule.node_id == requester:
                return str(rule.policy)
        return str(self.settings.approval_policy)

    def _save_token(self, token_key: str, token: dict[str, Any]) -> None:
        remaining = token["created_at"] + self.settings.reveal_token_ttl_seconds - time.time()
        self.state.put(token_key, token, ttl=max(1.0, remaining))

    async def _respond(self, requester: str, request_id: str, body: dict[str, Any]) -> None:
        key = self.core.pins.pinned(requester)
        if key is None:
            return
        try:
            await self._deliver(to=requester, to_key=key, request_id=request_id,
                                kind="reveal_response", body=body)
        except HTTPProblem:
            pass  # queued in the outbox; the decision itself is durable already

    async def _decline(self, token_key: str, token: dict[str, Any], reason: str) -> None:
        """Consume the token as declined, count it and tell its requester why."""
        token["state"] = "declined"
        self._save_token(token_key, token)
        self.core.ctx.count_intro("declined", TEMPLATE)
        await self._respond(token["requester_id"], token["request_id"],
                            {"state": "declined", "reason": reason})

    async def _reveal(self, token_key: str, token: dict[str, Any]) -> dict[str, Any]:
        """Consume the token, log, emit, and send the intro (through the outbox)."""
        contacts = await self.core.ctx.contacts()
        target = Target.from_json(token["target"])
        contact = next((c for c in contacts if c.email == token["contact_email"]
                        and c.matches(target)), None) or choose_contact(contacts, target)
        if contact is None:
            await self._decline(token_key, token, "no_target_match")
            return {"state": "declined"}
        revealed_at = utc_now_iso()
        intro = {
            "connector": {"node_id": self.core.node_id, "pseudonym_id": token["pseudonym_id"]},
            "target_contact": contact.intro_contact(),
            "relationship_strength": round(contact.strength, 3),
            "next_step": NEXT_STEP,
        }
        token.update(state="revealed", revealed_at=revealed_at)
        self._save_token(token_key, token)
        self.core.ctx.count_intro("revealed", TEMPLATE)
        summary = {"name": contact.name, "org": contact.org, "role": contact.role}
        self.core.audit({
            "side": "responder", "template": TEMPLATE, "request_id": token["request_id"],
            "consent_id": None, "requester_node_id": token["requester_id"],
            "requester_key_fingerprint": token["requester_key"],
            "responder_node_id": self.core.node_id, "target": token["target"],
            "contact": summary, "relationship_strength": intro["relationship_strength"],
            "revealed_at": revealed_at, "approval_id": token.get("approval_id"),
        })
        await self._respond(token["requester_id"], token["request_id"],
                            {"state": "revealed", "intro": intro, "revealed_at": revealed_at})
        await self.core.ctx.emit_revealed(IntroRevealed.model_validate({
            "node_id": self.core.node_id, "side": "responder", "template": TEMPLATE,
            "request_id": token["request_id"], "consent_id": None,
            "requester_node_id": token["requester_id"], "responder_node_id": self.core.node_id,
            "target": token["target"], "contact": summary,
            "relationship_strength": intro["relationship_strength"], "revealed_at": revealed_at,
        }))
        return {"state": "revealed"}

    # -------------------------------------------------------------- approvals

    def owns_approval(self, approval_id: str) -> bool:
        return self.state.get(APPROVAL_PREFIX + approval_id) is not None

    def pending_approvals(self) -> list[dict[str, Any]]:
        out = []
        for _, approval in self.state.items(APPROVAL_PREFIX):
            if approval["state"] != "pending":
                continue
            token = self.state.get(approval["token_key"])
            if token is None:
                continue
            out.append({
                "approval_id": approval["approval_id"], "template": TEMPLATE,
                "request_id": token["request_id"], "requester_node_id": token["requester_id"],
                "requester_key_fingerprint": token["requester_key"], "target": token["target"],
                "contact": token.get("contact") or {"email": token["contact_email"]},
                "created_at": approval["created_at"],
                "state": approval["state"],
            })
        return out

    async def decide(self, approval_id: str, approve: bool) -> dict[str, Any]:
        """The operator's decision on a held reveal (404/409/410 with a reason)."""
        await self.flush_outbox()
        approval = self.state.get(APPROVAL_PREFIX + approval_id)
        if approval is None:
            raise HTTPProblem(404, "approval_id not found or expired", reason="unknown_approval")
        if approval["state"] != "pending":
            raise HTTPProblem(409, f"approval already {approval['state']}",
                              reason="already_decided")
        token = self.state.get(approval["token_key"])
        if token is None or token.get("state") != "pending":
            approval["state"] = "expired"
            self.state.put(APPROVAL_PREFIX + approval_id, approval, ttl=3600)
            raise HTTPProblem(410, "the reveal token of this approval expired",
                              reason="token_expired")
        token = dict(token)
        approval["state"] = "approved" if approve else "declined"
        approval["decided_at"] = time.time()
        self.state.put(APPROVAL_PREFIX + approval_id, approval,
                       ttl=self.settings.reveal_token_ttl_seconds)
        if approve:
            result = await self._reveal(approval["token_key"], token)
            approval["state"] = "approved" if result["state"] == "revealed" else "declined"
            self.state.put(APPROVAL_PREFIX + approval_id, approval,
                           ttl=self.settings.reveal_token_ttl_seconds)
        else:
            await self._decline(approval["token_key"], token, "declined")
        return {"approval_id": approval_id, "state": approval["state"],
                "approved": approval["state"] == "approved"}
