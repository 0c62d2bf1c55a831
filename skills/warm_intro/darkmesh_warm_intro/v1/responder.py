"""The responder side of v1: evaluate posts (§3.9), deliver answers (§6 step 7), reveal (§3.10).

What differs from upstream, wire format unchanged (§10.1):

* a reveal token remembers the normalised target and a fingerprint of the contact chosen
  for it; a reveal for another target is refused (``reveal_token_mismatch``) and only
  that contact is ever revealed;
* empty targets are never eligible and never revealed (``no_target_match``);
* received elements are validated, oversized lists refused, malformed hex is an
  ineligible answer rather than a 500;
* a token is consumed only by a successful (or declined) reveal, and a repeat of that
  reveal returns the same answer, so a requester whose call timed out can retry;
* every answer uses a fresh pseudonym; a per-requester budget bounds disclosure;
* optionally every reveal waits for the operator's approval (``v1_require_approval``):
  until then the reveal answers 409 ``approval pending`` and keeps the token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.matching import NEXT_STEP, Contact, Target, choose_contact
from darkmesh_warm_intro.v1 import keys, psi
from darkmesh_warm_intro.v1.locks import KeyedLocks
from darkmesh_warm_intro.v1.models import TEMPLATE
from darkmesh_warm_intro.v1.outbound import (
    CallRefused,
    PeerCallFailed,
    clean_base_url,
    plan_call,
    post_json,
)
from sdl_core import HTTPProblem, Identity, IntroRevealed, bind

log = logging.getLogger("darkmesh.warm_intro.v1")

INBOX_PATH = "/darkmesh/skills/warm-intro/inbox/"
#: Audit entries kept (oldest dropped first).
AUDIT_LIMIT = 10_000


class BudgetExceeded(Exception):
    def __init__(self, requester_id: str, limit: int, window: int) -> None:
        super().__init__(
            f"budget exceeded for requester '{requester_id}': at most {limit} answered "
            f"requests per {window} s (warm_intro.budget_requests)"
        )


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The answer to one post; ``token_key`` is set when a reveal token was minted."""

    answer: dict[str, Any]
    token_key: str | None = None

    @property
    def eligible(self) -> bool:
        return bool(self.answer.get("eligible"))


def contact_fingerprint(contact: Contact) -> str:
    """Identifies the chosen contact without storing its details next to the token."""
    if contact.email:
        return keys.digest("email\x1f" + contact.email)
    parts = [(p or "").strip().lower() for p in (contact.name, contact.org, contact.role)]
    return keys.digest("nameorg\x1f" + "\x1f".join(parts))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Responder:
    """State lives in ``ctx.state`` (durable); only per-token locks live in memory."""

    def __init__(self, ctx: WarmIntroContext) -> None:
        self.ctx = ctx
        self._locks = KeyedLocks()

    # ------------------------------------------------------------ evaluation (§3.9)

    async def evaluate(self, body: dict[str, Any]) -> Evaluation:
        """Decide one post in the §3.9 order; mint a bound reveal token when eligible.

        :raises BudgetExceeded: the requester used up its answers for this window.
        """
        request_id = body.get("request_id")
        requester_id = body.get("requester_id")
        echo = request_id if isinstance(request_id, str) and request_id else None
        refusal = Evaluation(answer={"request_id": echo, "eligible": False})
        if not echo or not isinstance(requester_id, str) or not requester_id.strip():
            return refusal
        if not keys.is_path_safe_request_id(request_id):
            return refusal
        target = Target.from_json(body.get("target"))
        if target.empty:
            return refusal
        contacts = await self.ctx.contacts()
        chosen = choose_contact(contacts, target)
        if chosen is None:
            return refusal
        x_values = self._received_values(body.get("psi"))
        if x_values is None:
            return refusal
        identifiers = list(dict.fromkeys(self.ctx.host.settings.self_identifiers))
        if not identifiers:
            # Nobody could intersect with us: an answer would disclose for nothing.
            return refusal
        self._spend_budget(requester_id, echo)
        strength = max([0.5, *(c.strength for c in contacts if c.matches(target))])
        answer_psi = await asyncio.to_thread(psi.responder_answer, x_values, identifiers)
        token = keys.new_reveal_token()
        pseudonym = keys.new_pseudonym()
        ttl = float(self.ctx.settings.reveal_token_ttl_seconds)
        key = keys.token_key(token)
        self.ctx.state.put(
            key,
            {
                "token": token,
                "created_at": time.time(),
                "expires_at": time.time() + ttl,
                "request_id": request_id,
                "requester_id": requester_id,
                "target": target.to_json(),
                "target_key": target.key(),
                "contact": contact_fingerprint(chosen),
                "pseudonym_id": pseudonym,
                "state": "open",
            },
            ttl=ttl,
        )
        url = self.ctx.host.settings.listen_url
        answer = {
            "request_id": request_id,
            "eligible": True,
            "responder": {"node_id": self.ctx.node_id, "pseudonym_id": pseudonym, "url": url},
            "responder_url": url,
            "target_strength": round(strength, 3),
            "reveal_token": token,
            "psi": psi.psi_block(answer_psi),
        }
        return Evaluation(answer=answer, token_key=key)

    def _received_values(self, block: object) -> list[int] | None:
        """The post's ``x_values``, validated; None (ineligible) on anything wrong."""
        if not isinstance(block, dict):
            return None
        protocol = block.get("protocol")
        if protocol is not None and protocol != psi.PROTOCOL:
            return None
        if block.get("p") is not None and not psi.is_prime_modulus(block.get("p")):
            return None
        try:
            limit = min(self.ctx.settings.v1_max_post_values, self.ctx.settings.max_contacts)
            return psi.decode_all(block.get("x_values"), max_count=limit)
        except psi.InvalidElement:
            return None

    def _spend_budget(self, requester_id: str, request_id: str) -> None:
        """One unit per distinct request answered; a re-delivered post costs nothing."""
        settings = self.ctx.settings
        key = keys.budget_key(requester_id, request_id)
        if self.ctx.state.get(key) is not None:
            return
        used = len(self.ctx.state.items(keys.budget_prefix(requester_id)))
        if used >= settings.budget_requests:
            raise BudgetExceeded(requester_id, settings.budget_requests,
                                 settings.budget_window_seconds)
        self.ctx.state.put_if_absent(key, time.time(), ttl=float(settings.budget_window_seconds))

    async def respond(self, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """``POST /psi/respond``: only this node's own poller may ask (``aauth.md`` §4.1)."""
        bind(identity, self.ctx.node_id, "node_id")
        try:
            return (await self.evaluate(body)).answer
        except BudgetExceeded as exc:
            raise HTTPProblem(429, str(exc), reason="budget_exceeded") from None

    # --------------------------------------------------- embedded poller (§6 step 7)

    async def handle_post(self, post: object) -> None:
        """Evaluate a relay post and deliver an eligible answer to its requester's inbox.

        Never raises: a hostile post is logged and dropped.
        """
        try:
            await self._handle_post(post)
        except Exception:
            log.exception("warm_intro_v1: post dropped after an unexpected error")

    async def _handle_post(self, post: object) -> None:
        if not isinstance(post, dict) or post.get("template", TEMPLATE) != TEMPLATE:
            return
        request_id = post.get("request_id")
        token = post.get("response_token")
        base = clean_base_url(post.get("requester_url"))
        if not keys.is_path_safe_request_id(request_id) or not isinstance(token, str) or not token:
            log.info("warm_intro_v1: post without a usable request_id or response_token")
            return
        if base is None:
            log.info("warm_intro_v1: post %s has no usable http(s) requester_url", request_id)
            return
        if post.get("requester_id") == self.ctx.node_id:
            return
        try:
            # Decide how to reach the requester before minting anything for it.
            plan_call(self.ctx, base)
        except CallRefused as exc:
            # Info, not warning: on a busy relay most posts come from non-peers; start-up
            # already warned when no peer can be reached at all.
            log.info("warm_intro_v1: not answering post %s: %s", request_id, exc)
            return
        fields = {k: post.get(k) for k in ("request_id", "requester_id", "target", "psi")}
        try:
            evaluation = await self.evaluate(fields)
        except BudgetExceeded as exc:
            log.warning("warm_intro_v1: not answering post %s: %s", request_id, exc)
            return
        if not evaluation.eligible:
            return
        path = INBOX_PATH + str(request_id)
        try:
            await post_json(
                self.ctx, base, path, {"response_token": token, "response": evaluation.answer}
            )
            self.ctx.count_intro("answered", TEMPLATE)
        except (CallRefused, PeerCallFailed) as exc:
            log.warning("warm_intro_v1: answer to %s not delivered: %s", request_id, exc)
            refused = not isinstance(exc, PeerCallFailed) or exc.status is not None
            # A refused answer leaves nobody holding the token: drop it rather than keep a
            # live capability. After a timeout the requester may have it: let it expire.
            if refused and evaluation.token_key:
                self.ctx.state.delete(evaluation.token_key)

    # --------------------------------------------------------------- reveal (§3.10)

    async def reveal(self, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """``POST /reveal`` in the §3.10 order, with the §10.1 bindings."""
        requester_id = body.get("requester_id")
        if not isinstance(requester_id, str) or not requester_id.strip():
            raise HTTPProblem(400, "requester_id is required")
        bind(identity, requester_id, "requester_id")
        request_id = body.get("request_id")
        echo = request_id if isinstance(request_id, str) else None

        def refuse(reason: str) -> dict[str, Any]:
            return {"request_id": echo, "approved": False, "reason": reason}

        token = body.get("reveal_token")
        if not isinstance(token, str) or not token:
            return refuse("missing_reveal_token")
        key = keys.token_key(token)
        # Per-token serialisation: two concurrent reveals must not both succeed.
        async with self._locks.hold(key):
            result, event = await self._reveal_locked(body, key, token, requester_id, refuse)
        if event is not None:
            # Outside the lock, after the commit: subscribers never delay other reveals.
            await self.ctx.emit_revealed(event)
        return result

    async def _reveal_locked(
        self,
        body: dict[str, Any],
        key: str,
        token: str,
        requester_id: str,
        refuse: Callable[[str], dict[str, Any]],
    ) -> tuple[dict[str, Any], IntroRevealed | None]:
        entry = self.ctx.state.get(key)
        if not isinstance(entry, dict) or not hmac.compare_digest(
            str(entry.get("token", "")).encode(), token.encode()
        ):
            return refuse("invalid_reveal_token"), None
        target = Target.from_json(body.get("target"))
        same_request = (
            body.get("request_id") == entry["request_id"]
            and requester_id == entry["requester_id"]
        )
        if entry.get("state") == "done":
            # A repeat of the reveal that consumed the token gets the same answer;
            # anything else finds the token used.
            if same_request and target.key() == entry["target_key"]:
                self._audit(entry, "repeat", entry["result"])
                return dict(entry["result"]), None
            return refuse("invalid_reveal_token"), None
        if not same_request:
            return refuse("reveal_token_mismatch"), None
        if target.empty:
            return refuse("no_target_match"), None
        if target.key() != entry["target_key"]:
            return refuse("reveal_token_mismatch"), None
        template = body.get("template", TEMPLATE)
        if template != TEMPLATE:
            raise HTTPProblem(400, f"Template not allowed: {template}")
        candidate = body.get("candidate")
        claimed = candidate.get("responder_node_id") if isinstance(candidate, dict) else None
        if claimed and claimed != self.ctx.node_id:
            return refuse("candidate_mismatch"), None
        contact = await self._bound_contact(entry)
        if contact is None:
            return refuse("no_target_match"), None
        if self.ctx.settings.v1_require_approval:
            decision = self._approval_state(key, entry)
            if decision == "pending":
                raise HTTPProblem(409, "approval pending", reason="approval_pending")
            if decision == "declined":
                result = dict(refuse("declined"))
                self._finish(key, entry, result, "declined")
                return result, None
        result = {
            "request_id": entry["request_id"],
            "approved": True,
            "intro": {
                "connector": {"node_id": self.ctx.node_id, "pseudonym_id": entry["pseudonym_id"]},
                "target_contact": contact.intro_contact(),
                "relationship_strength": round(contact.strength, 3),
                "next_step": NEXT_STEP,
            },
        }
        # Commit first: a requester retrying after a timeout gets this same answer.
        self._finish(key, entry, result, "approved")
        event = IntroRevealed.model_validate(
            {
                "node_id": self.ctx.node_id,
                "side": "responder",
                "template": TEMPLATE,
                "request_id": entry["request_id"],
                "requester_node_id": entry["requester_id"],
                "responder_node_id": self.ctx.node_id,
                "target": entry["target"],
                "contact": {"name": contact.name, "org": contact.org, "role": contact.role},
                "relationship_strength": round(contact.strength, 3),
                "revealed_at": _now_iso(),
            }
        )
        return result, event

    async def _bound_contact(self, entry: dict[str, Any]) -> Contact | None:
        """The contact chosen when the token was minted, if it still matches the target."""
        target = Target.from_json(entry["target"])
        for contact in await self.ctx.contacts():
            if contact_fingerprint(contact) == entry["contact"] and contact.matches(target):
                return contact
        return None

    def _remaining(self, entry: dict[str, Any]) -> float:
        return max(1.0, float(entry.get("expires_at", 0)) - time.time())

    def _finish(
        self, key: str, entry: dict[str, Any], result: dict[str, Any], outcome: str
    ) -> None:
        done = {**entry, "state": "done", "result": result}
        self.ctx.state.put(key, done, ttl=self._remaining(entry))
        self._audit(entry, outcome, result)
        self.ctx.count_intro("revealed" if outcome == "approved" else "declined",
                             TEMPLATE)

    def _audit(self, entry: dict[str, Any], outcome: str, result: dict[str, Any]) -> None:
        intro = result.get("intro") if isinstance(result.get("intro"), dict) else None
        contact = intro.get("target_contact") if intro else None
        record = {
            "at": _now_iso(),
            "template": TEMPLATE,
            "request_id": entry["request_id"],
            "requester_id": entry["requester_id"],
            "target": entry["target"],
            "outcome": outcome,
            "contact": (
                {k: contact.get(k) for k in ("name", "org", "role")}
                if isinstance(contact, dict) else None
            ),
        }
        stamp = f"{time.time():017.6f}"
        self.ctx.state.put(f"{keys.AUDIT}{stamp}:{keys.new_reveal_token()[:8]}", record)
        entries = self.ctx.state.items(keys.AUDIT)
        for old_key, _ in entries[: max(0, len(entries) - AUDIT_LIMIT)]:
            self.ctx.state.delete(old_key)

    # ------------------------------------------------------- operator approval (§10.2.3)

    def _approval_state(self, key: str, entry: dict[str, Any]) -> str:
        approval_id = entry.get("approval_id")
        if isinstance(approval_id, str):
            record = self.ctx.state.get(keys.APPROVAL + approval_id)
            if isinstance(record, dict):
                return str(record["state"])
        approval_id = keys.new_approval_id()
        record = {
            "approval_id": approval_id,
            "template": TEMPLATE,
            "request_id": entry["request_id"],
            "requester_id": entry["requester_id"],
            "target": entry["target"],
            "created_at": time.time(),
            "state": "pending",
            "token_key": key,
        }
        ttl = self._remaining(entry)
        self.ctx.state.put(keys.APPROVAL + approval_id, record, ttl=ttl)
        self.ctx.state.put(key, {**entry, "approval_id": approval_id}, ttl=ttl)
        log.info("warm_intro_v1: reveal for %s from %s awaits approval %s",
                 entry["request_id"], entry["requester_id"], approval_id)
        return "pending"

    def pending_approvals(self) -> list[dict[str, Any]]:
        out = []
        for _, record in self.ctx.state.items(keys.APPROVAL):
            if isinstance(record, dict) and record.get("state") == "pending":
                out.append(self._public_approval(record))
        return out

    async def decide(self, approval_id: str, approve: bool) -> dict[str, Any]:
        record = self.ctx.state.get(keys.APPROVAL + approval_id)
        if not isinstance(record, dict):
            raise HTTPProblem(404, "approval_id not found or expired", reason="unknown_approval")
        wanted = "approved" if approve else "declined"
        if record["state"] not in ("pending", wanted):
            raise HTTPProblem(
                409, f"approval {approval_id} is already {record['state']}",
                reason="already_decided",
            )
        entry = self.ctx.state.get(record["token_key"])
        ttl = self._remaining(entry) if isinstance(entry, dict) else 1.0
        record = {**record, "state": wanted, "decided_at": time.time()}
        self.ctx.state.put(keys.APPROVAL + approval_id, record, ttl=ttl)
        return self._public_approval(record)

    @staticmethod
    def _public_approval(record: dict[str, Any]) -> dict[str, Any]:
        return {k: record.get(k) for k in (
            "approval_id", "template", "request_id", "requester_id", "target", "created_at",
            "state",
        )}

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent reveal audit entries, newest last."""
        entries = self.ctx.state.items(keys.AUDIT)
        return [record for _, record in entries[-limit:]]

    def counts(self) -> dict[str, int]:
        tokens = self.ctx.state.items(keys.TOKEN)
        return {
            "reveal_tokens": sum(1 for _, e in tokens if isinstance(e, dict)
                                 and e.get("state") == "open"),
            "pending_approvals": len(self.pending_approvals()),
            "reveals": sum(1 for _, r in self.ctx.state.items(keys.AUDIT)
                           if isinstance(r, dict) and r.get("outcome") == "approved"),
        }
