"""The requester side of v1: publish (§3.6), collect answers (§3.8), score (§6 step 8),
consent (§3.7).

The collection window is waited in full, as upstream does: v1 answers are pushed by
whoever pulled the post, and nothing on the wire says how many will come.

Pending requests (the window) live in memory: the operator's HTTP call that opened one
is gone after a restart anyway. Sessions (what a consent needs) are durable in
``ctx.state``, so a restart between request and consent loses nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.matching import Contact, score
from darkmesh_warm_intro.v1 import keys, psi
from darkmesh_warm_intro.v1.locks import KeyedLocks
from darkmesh_warm_intro.v1.models import TEMPLATE, RequestBody
from darkmesh_warm_intro.v1.outbound import CallRefused, PeerCallFailed, clean_base_url, post_json
from sdl_core import HTTPProblem, Identity, IntroRevealed, RelayError, bind, parse_strength

log = logging.getLogger("darkmesh.warm_intro.v1")

REVEAL_PATH = "/darkmesh/skills/warm-intro/reveal"
#: Deliveries accepted per request; more are refused with 429 (a flood, not peers).
#: The response_token is broadcast (§10.2 item 1), so anyone pulling the post can deliver.
MAX_ANSWERS = 1000
#: Bytes of answers kept per request (a legitimate answer is ~0.5 KiB per contact sent).
MAX_INBOX_BYTES = 64 * 1024 * 1024
#: ``y_values_b`` accepted per answer (one per self identifier of the responder).
MAX_Y_VALUES = 32
#: Exponentiations spent scoring one request (~20 ms each): bounds a flood's cost.
MAX_PSI_EVALUATIONS = 1000
#: Longest pseudonym or node id kept from an answer.
MAX_LABEL = 200


@dataclass(kw_only=True)
class PendingRequest:
    """An open collection window."""

    response_token: str
    own: psi.RequesterSet
    answers: list[dict[str, Any]] = field(default_factory=list)
    deliveries: int = 0
    stored_bytes: int = 0


def validation_problem(exc: ValidationError) -> HTTPProblem:
    """422 in FastAPI's shape, as the guard would render it."""
    detail = [
        {"type": err.get("type"), "loc": ["body", *[str(p) for p in err.get("loc", ())]],
         "msg": err.get("msg")}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return HTTPProblem(422, detail)


def _label(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= MAX_LABEL:
        return value
    return None


def _target_strength(value: object) -> float | None:
    """The answer's ``target_strength``: missing means 0.5 (upstream); present but not a
    finite number in [0, 1] drops the answer (§10.1 item 4)."""
    if value is None:
        return 0.5
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    parsed = parse_strength(value, default=math.nan)
    if not math.isfinite(parsed) or not 0.0 <= parsed <= 1.0:
        return None
    return parsed


class Requester:
    def __init__(self, ctx: WarmIntroContext) -> None:
        self.ctx = ctx
        self.pending: dict[str, PendingRequest] = {}
        self._consent_locks = KeyedLocks()

    # ------------------------------------------------------------------ request (§3.6)

    def parse(self, body: dict[str, Any]) -> RequestBody:
        try:
            request = RequestBody.model_validate(body)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        if request.template != TEMPLATE or not self.ctx.settings.v1_enabled:
            raise HTTPProblem(400, f"Template not allowed: {request.template}")
        if request.target.normalised().empty:
            raise HTTPProblem(
                400, "target must name a company or a role (an empty target matches everyone)",
                reason="empty_target",
            )
        return request

    async def _identifiers(self) -> list[tuple[str, float]]:
        if await self.ctx.host.store.count("contacts") == 0:
            raise HTTPProblem(400, "contacts integration has no records")
        contacts: list[Contact] = [c for c in await self.ctx.contacts() if c.email]
        if not contacts:
            raise HTTPProblem(400, "No contacts available")
        cap = self.ctx.settings.max_contacts
        if len(contacts) > cap:
            # The post reveals the set size and costs every responder one exponentiation
            # per value: send the strongest `max_contacts` (they make the best scores).
            log.warning("warm_intro_v1: %d contacts, sending the %d strongest "
                        "(warm_intro.max_contacts)", len(contacts), cap)
            contacts = sorted(contacts, key=lambda c: c.strength, reverse=True)[:cap]
        return [(c.email, c.strength) for c in contacts]

    async def request(self, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
        request = self.parse(body)
        target = request.target.normalised()
        pairs = await self._identifiers()
        relay = self.ctx.host.relay
        if relay is None or not self.ctx.host.settings.relay_url:
            raise HTTPProblem(500, "relay_url not configured")
        own = await asyncio.to_thread(psi.requester_set, pairs)
        request_id = keys.new_request_id()
        slot = PendingRequest(response_token=keys.new_response_token(), own=own)
        post = {
            "request_id": request_id,
            "requester_id": self.ctx.node_id,
            "requester_url": self.ctx.host.settings.listen_url,
            "template": TEMPLATE,
            # Trimmed, "" as null: upstream responders match the raw strings.
            "target": target.to_json(),
            "constraints": {
                "max_candidates": request.constraints.max_candidates,
                "min_strength": request.constraints.min_strength,
            },
            "psi": {"protocol": psi.PROTOCOL, "p": psi.P_HEX, "x_values": own.x_values},
            "response_token": slot.response_token,
            "ttl_seconds": self.ctx.settings.post_ttl_seconds,
        }
        # Open the window before publishing: an answer can arrive before publish returns.
        self.pending[request_id] = slot
        try:
            try:
                await relay.publish(post)
            except (RelayError, httpx.HTTPError) as exc:
                # The core client raises RelayError(status, detail); status 0: no answer.
                raise HTTPProblem(502, f"Relay error: {_relay_text(exc)}") from None
            self._remember(request_id, target.to_json(), "collecting", 0)
            self.ctx.count_intro("requested", TEMPLATE)
            await asyncio.sleep(self.ctx.settings.response_wait_seconds)
        finally:
            self.pending.pop(request_id, None)
        candidates = await asyncio.to_thread(
            self._score, slot, request.constraints.min_strength,
            request.constraints.max_candidates,
        )
        if candidates:
            self.ctx.state.put(
                keys.SESSION + request_id,
                {
                    "created_at": time.time(),
                    "template": TEMPLATE,
                    "target": post["target"],
                    "target_key": target.key(),
                    "candidates": candidates,
                },
                ttl=float(self.ctx.settings.warm_intro_session_ttl),
            )
        self._remember(request_id, target.to_json(), "complete", len(candidates))
        ordered = sorted(candidates.items(), key=lambda item: item[1]["rank"])
        return {
            "request_id": request_id,
            "candidates": [
                {"pseudonym_id": c["pseudonym_id"], "score": c["score"],
                 "requires_consent": True, "consent_id": consent_id}
                for consent_id, c in ordered
            ],
            "privacy_cost": round(0.1 * max(1, slot.deliveries), 3),
        }

    def _remember(self, request_id: str, target: dict[str, Any], state: str,
                  candidates: int) -> None:
        key = keys.RECENT + request_id
        created = (self.ctx.state.get(key) or {}).get("created_at", time.time())
        self.ctx.state.put(key, {"request_id": request_id, "target": target,
                                 "created_at": created, "state": state,
                                 "candidates": candidates},
                           ttl=float(self.ctx.settings.warm_intro_session_ttl))

    def summaries(self) -> list[dict[str, Any]]:
        """One line per recent v1 request of this node (``GET /requests``), unordered.

        A window lost to a restart (``collecting`` but no longer open here) is ``expired``.
        """
        out = []
        for _, record in self.ctx.state.items(keys.RECENT):
            request_id = record["request_id"]
            state = record["state"]
            if state == "collecting" and request_id not in self.pending:
                state = "expired"
            session = self.ctx.state.get(keys.SESSION + request_id) or {}
            results = [c.get("result") for c in (session.get("candidates") or {}).values()]
            results = [r for r in results if isinstance(r, dict)]
            revealed = [r for r in results if r.get("approved") and r.get("intro")]
            intro = revealed[0]["intro"] if revealed else None
            contact = intro.get("target_contact") or {} if intro else {}
            out.append({
                "request_id": request_id, "template": TEMPLATE, "side": "requester",
                "target": record["target"], "created_at": record["created_at"],
                "at": record["created_at"], "state": state,
                "candidates": record["candidates"], "revealed": len(revealed), "pending": 0,
                "declined": sum(1 for r in results if not r.get("approved")),
                "answered": None, "live_nodes": None, "refused": None,
                "contact": {k: contact.get(k) for k in ("name", "org", "role")}
                if intro else {},
                "peer": (intro.get("connector") or {}).get("node_id") if intro else None,
            })
        return out

    def _score(
        self, slot: PendingRequest, min_strength: float, max_candidates: int
    ) -> dict[str, dict[str, Any]]:
        """§6 step 8 with the §10.1 checks: PSI, strength bounds, identity, de-duplication."""
        accepted: list[dict[str, Any]] = []
        seen: set[str] = set()
        best_local = max(slot.own.strengths, default=0.0)
        budget = MAX_PSI_EVALUATIONS
        for answer in slot.answers:
            if answer.get("eligible") is not True:
                continue
            block = answer.get("psi")
            remote = _target_strength(answer.get("target_strength"))
            if not isinstance(block, dict) or remote is None:
                continue
            if score(best_local, remote) < min_strength:
                continue  # cannot make the threshold whoever it is: skip the exponentiations
            ys = block.get("y_values_b")
            cost = len(ys) if isinstance(ys, list) else 0
            if not 0 < cost <= MAX_Y_VALUES:
                continue
            if cost > budget:
                log.warning("warm_intro_v1: PSI budget (%d exponentiations) spent; later "
                            "answers left unscored", MAX_PSI_EVALUATIONS)
                break
            budget -= cost
            hit = psi.intersection_index(
                slot.own, block.get("x_values_b"), ys, max_y=MAX_Y_VALUES
            )
            if hit is None:
                continue
            value = score(slot.own.strengths[hit], remote)
            if value < min_strength:
                continue
            responder = answer.get("responder")
            responder = responder if isinstance(responder, dict) else {}
            pseudonym = _label(responder.get("pseudonym_id", "unknown"))
            url = clean_base_url(answer.get("responder_url")) or clean_base_url(
                responder.get("url")
            )
            token = answer.get("reveal_token")
            if pseudonym is None or pseudonym in seen or url is None:
                continue
            if not isinstance(token, str) or not token or len(token) > MAX_LABEL:
                continue
            seen.add(pseudonym)
            accepted.append({
                "pseudonym_id": pseudonym,
                "responder_node_id": _label(responder.get("node_id")) or "",
                "responder_url": url,
                "score": round(value, 3),
                "reveal_token": token,
            })
        # Stable sort: on equal scores the first arrival stays first.
        accepted.sort(key=lambda c: c["score"], reverse=True)
        out: dict[str, dict[str, Any]] = {}
        for rank, candidate in enumerate(accepted[:max_candidates]):
            consent_id = keys.new_consent_id()
            while consent_id in out:
                consent_id = keys.new_consent_id()
            out[consent_id] = {**candidate, "rank": rank}
        return out

    # --------------------------------------------------------------------- inbox (§3.8)

    def deliver(
        self, request_id: str, body: dict[str, Any], identity: Identity, size: int = 0
    ) -> dict[str, Any]:
        slot = self.pending.get(request_id)
        if slot is None:
            raise HTTPProblem(404, "request not found")
        given = body.get("response_token")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8"), slot.response_token.encode("utf-8")
        ):
            raise HTTPProblem(403, "invalid response_token")
        response = body.get("response")
        answer = response if isinstance(response, dict) and response else body
        responder = answer.get("responder")
        claimed = responder.get("node_id") if isinstance(responder, dict) else None
        bind(identity, claimed if isinstance(claimed, str) else None, "responder node_id")
        if slot.deliveries >= MAX_ANSWERS or slot.stored_bytes + size > MAX_INBOX_BYTES:
            raise HTTPProblem(429, f"too many answers for request {request_id}",
                              reason="too_many_answers")
        slot.deliveries += 1
        slot.stored_bytes += size
        slot.answers.append(answer)
        return {"ok": True, "received": len(slot.answers)}

    def owns(self, request_id: str) -> bool:
        if request_id in self.pending:
            return True
        return self.ctx.state.get(keys.SESSION + request_id) is not None

    # ------------------------------------------------------------------- consent (§3.7)

    async def consent(self, request_id: str, consent_id: str) -> dict[str, Any]:
        # Two concurrent consents must not both spend the reveal token.
        async with self._consent_locks.hold(f"{request_id}\x1f{consent_id}"):
            result, event = await self._consent_locked(request_id, consent_id)
        if event is not None:
            await self.ctx.emit_revealed(event)
        return result

    async def _consent_locked(
        self, request_id: str, consent_id: str
    ) -> tuple[dict[str, Any], IntroRevealed | None]:
        session_key = keys.SESSION + request_id
        session = self.ctx.state.get(session_key)
        if not isinstance(session, dict):
            raise HTTPProblem(404, "request_id not found or expired")
        candidate = session["candidates"].get(consent_id)
        if not isinstance(candidate, dict):
            raise HTTPProblem(404, "consent_id not found")
        if isinstance(candidate.get("result"), dict):
            return dict(candidate["result"]), None
        url = clean_base_url(candidate.get("responder_url"))
        if url is None:
            raise HTTPProblem(502, "candidate responder url unavailable")
        body = {
            "request_id": request_id,
            "requester_id": self.ctx.node_id,
            "template": session.get("template", TEMPLATE),
            "target": session["target"],
            "candidate": {"pseudonym_id": candidate["pseudonym_id"],
                          "responder_node_id": candidate["responder_node_id"]},
            "reveal_token": candidate["reveal_token"],
        }
        try:
            answer = await post_json(self.ctx, url, REVEAL_PATH, body)
        except (CallRefused, PeerCallFailed) as exc:
            raise HTTPProblem(502, f"Reveal error: {exc}") from None
        approved = answer.get("approved") is True
        intro = _clean_intro(answer.get("intro")) if approved else None
        if approved and intro is None:
            raise HTTPProblem(502, "Reveal error: approved answer without a usable intro")
        result = {
            "request_id": request_id,
            "consent_id": consent_id,
            "approved": approved,
            "pseudonym_id": candidate["pseudonym_id"],
            "intro": intro,
        }
        session["candidates"][consent_id] = {**candidate, "result": result}
        remaining = float(session["created_at"]) + self.ctx.settings.warm_intro_session_ttl
        self.ctx.state.put(session_key, session, ttl=max(1.0, remaining - time.time()))
        self.ctx.count_intro("revealed" if approved else "declined", TEMPLATE)
        if not approved or intro is None:
            return result, None
        contact = intro["target_contact"]
        connector = intro["connector"]
        event = IntroRevealed.model_validate({
            "node_id": self.ctx.node_id,
            "side": "requester",
            "template": TEMPLATE,
            "request_id": request_id,
            "consent_id": consent_id,
            "requester_node_id": self.ctx.node_id,
            "responder_node_id": connector.get("node_id") or candidate["responder_node_id"],
            "target": session["target"],
            "contact": {k: contact.get(k) for k in ("name", "org", "role")},
            "relationship_strength": intro["relationship_strength"],
            "revealed_at": datetime.now(UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
        })
        return result, event

    def counts(self) -> dict[str, int]:
        return {
            "pending_requests": len(self.pending),
            "sessions": len(self.ctx.state.items(keys.SESSION)),
        }


def _relay_text(exc: Exception) -> str:
    """``RelayError(status, detail)`` from the core client (status 0: no answer at all)."""
    detail = getattr(exc, "detail", None)
    status = getattr(exc, "status", None)
    text = str(detail) if detail is not None else (str(exc) or type(exc).__name__)
    if isinstance(status, int) and not isinstance(status, bool) and status > 0:
        return f"relay answered {status}: {text}"
    return text


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 1000 else None


def _clean_intro(value: object) -> dict[str, Any] | None:
    """The responder's intro, reduced to the §3.7 shape (a peer's extra fields and
    oversized or mistyped values do not reach the operator)."""
    if not isinstance(value, dict):
        return None
    connector = value.get("connector")
    contact = value.get("target_contact")
    if not isinstance(connector, dict) or not isinstance(contact, dict):
        return None
    strength = _target_strength(value.get("relationship_strength"))
    return {
        "connector": {"node_id": _str_or_none(connector.get("node_id")),
                      "pseudonym_id": _str_or_none(connector.get("pseudonym_id"))},
        "target_contact": {k: _str_or_none(contact.get(k))
                           for k in ("name", "email", "org", "role")},
        "relationship_strength": round(strength if strength is not None else 0.0, 3),
        "next_step": _str_or_none(value.get("next_step")) or "",
    }
