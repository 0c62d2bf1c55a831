"""The v2 requester: publish a blinded request, collect sealed replies, consent.

State, all in the node database (``host.state("warm_intro")``), so a restart between
any two steps loses nothing:

* ``v2:req:<request_id>``: target, constraints, the secret scalar, strengths by
  blinded position, deadline, expected answers, and once complete the candidates
  with their consent state and intro;
* ``v2:ans:<request_id>:<responder>``: one opened reply per responder, written with
  set-if-absent so a replayed or second reply is refused.

The requester returns as soon as every live node has answered (the relay's
``live_nodes`` at publish) or the deadline passes; never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import secrets
import time
from typing import Any

from darkmesh_warm_intro import psi
from darkmesh_warm_intro.matching import Target, score
from darkmesh_warm_intro.models import ConstraintsModel
from darkmesh_warm_intro.sealing import Opened, b64d, b64e, fingerprint
from darkmesh_warm_intro.v2 import exchange
from darkmesh_warm_intro.v2.core import TEMPLATE, Refused, V2Core
from sdl_core import HTTPProblem, IntroRevealed

REQ_PREFIX = "v2:req:"
ANS_PREFIX = "v2:ans:"
CANDIDATE_STATES = ("available", "pending", "revealed", "declined")
MAX_B64_REPLY = 2 * 1024 * 1024


def _finite01(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def request_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The listing line of one stored v2 request: counts, never a responder's id or
    token; the connector and contact appear only once an intro was revealed."""
    candidates = record["candidates"]
    revealed = [c for c in candidates if c["state"] == "revealed" and c.get("intro")]
    first = revealed[0]["intro"] if revealed else None
    contact = first.get("target_contact") or {} if first else {}
    return {
        "request_id": record["request_id"], "template": TEMPLATE, "side": "requester",
        "target": record["target"], "created_at": record["created_at"],
        "at": record["created_at"], "state": record["state"],
        "candidates": len(candidates), "revealed": len(revealed),
        "pending": sum(1 for c in candidates if c["state"] == "pending"),
        "declined": sum(1 for c in candidates if c["state"] == "declined"),
        "answered": record["answered"], "live_nodes": record["live_nodes"],
        "refused": record["refused"],
        "contact": {k: contact.get(k) for k in ("name", "org", "role")} if first else {},
        "peer": (first.get("connector") or {}).get("node_id") if first else None,
    }


class Requester:
    def __init__(self, core: V2Core) -> None:
        self.core = core
        self.state = core.state
        self._events: dict[str, asyncio.Event] = {}

    @property
    def settings(self) -> Any:
        return self.core.ctx.settings

    # ------------------------------------------------------------------- start

    async def start(self, target: Target, constraints: ConstraintsModel) -> dict[str, Any]:
        """Validate, blind, publish; return the request record's public view."""
        if target.empty:
            raise HTTPProblem(400, "target needs a company or a role", reason="empty_target")
        relay = self.core.ctx.host.relay
        if relay is None:
            raise HTTPProblem(503, "relay_url not configured (DARKMESH_RELAY_URL)",
                              reason="no_relay")
        contacts = await self.core.ctx.contacts()
        if not contacts:
            raise HTTPProblem(400, "contacts integration has no records", reason="no_contacts")
        with_email = [(c.email, c.strength) for c in contacts if c.email]
        if not with_email:
            raise HTTPProblem(400, "No contacts available", reason="no_contacts")
        cap = min(self.settings.max_contacts, psi.MAX_ELEMENTS)
        if len(with_email) > cap:
            raise HTTPProblem(
                413, f"contact set of {len(with_email)} exceeds the cap of {cap} "
                "(DARKMESH_WARM_INTRO_MAX_CONTACTS)", reason="too_many_contacts",
            )
        # Blinding thousands of contacts takes a few hundred ms: keep the loop (and the
        # listener delivering other replies) responsive.
        blinded = await asyncio.to_thread(exchange.blind_contacts, with_email, limit=cap)
        request_id = secrets.token_hex(8)
        now = time.time()
        wait = self.settings.response_wait_seconds
        record: dict[str, Any] = {
            "request_id": request_id, "template": TEMPLATE, "state": "collecting",
            "created_at": now, "deadline": now + wait,
            "target": target.to_json(), "constraints": constraints.model_dump(),
            "scalar": b64e(blinded.scalar), "real_count": blinded.real_count,
            "padded_count": len(blinded.elements) // psi.ELEMENT_BYTES,
            "strengths": blinded.strengths, "live_nodes": None, "answered": 0, "refused": 0,
            "candidates": [], "privacy_cost": 0.0,
        }
        ttl = self.settings.warm_intro_session_ttl
        self.state.put(REQ_PREFIX + request_id, record, ttl=ttl)
        self._events[request_id] = asyncio.Event()
        post = {
            "request_id": request_id, "requester_id": self.core.node_id, "template": TEMPLATE,
            "target": target.to_json(), "constraints": constraints.model_dump(),
            "ttl_seconds": self.settings.post_ttl_seconds,
            "psi": {"protocol": exchange.PROTOCOL, "elements": b64e(blinded.elements),
                    "requester_key": b64e(self.core.keys.public)},
        }
        try:
            answer = await relay.publish(post)
        except Exception as exc:
            self.state.delete(REQ_PREFIX + request_id)
            self._events.pop(request_id, None)
            if isinstance(exc, HTTPProblem):
                raise HTTPProblem(502, f"Relay error: {exc.detail}", reason="relay_error") from exc
            raise HTTPProblem(502, f"Relay error: {type(exc).__name__}: {exc}",
                              reason="relay_error") from exc
        self.core.ctx.count_intro("requested", TEMPLATE)
        live = answer.get("live_nodes") if isinstance(answer, dict) else None
        current = self.state.get(REQ_PREFIX + request_id) or record
        current["live_nodes"] = live if isinstance(live, int) and live >= 0 else None
        self.state.put(REQ_PREFIX + request_id, current, ttl=ttl)
        self._maybe_complete(request_id)
        return self.view(request_id)

    async def wait(self, request_id: str) -> dict[str, Any]:
        """Block until every live node answered or the deadline passed."""
        record = self._load(request_id)
        event = self._events.setdefault(request_id, asyncio.Event())
        while record["state"] == "collecting":
            remaining = record["deadline"] - time.time()
            if remaining <= 0:
                self._finalise(request_id)
                break
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()
            event.clear()
            self._maybe_complete(request_id)
            record = self._load(request_id)
        self._events.pop(request_id, None)
        return self.view(request_id)

    # -------------------------------------------------------------------- view

    def _load(self, request_id: str) -> dict[str, Any]:
        record = self.state.get(REQ_PREFIX + request_id)
        if record is None:
            raise HTTPProblem(404, "request_id not found or expired", reason="unknown_request")
        return dict(record)

    def _save(self, record: dict[str, Any]) -> None:
        remaining = record["created_at"] + self.settings.warm_intro_session_ttl - time.time()
        self.state.put(REQ_PREFIX + record["request_id"], record, ttl=max(1.0, remaining))

    def view(self, request_id: str) -> dict[str, Any]:
        """The status of a request (finalising it when its deadline passed)."""
        record = self._load(request_id)
        if record["state"] == "collecting" and time.time() >= record["deadline"]:
            self._finalise(request_id)
            record = self._load(request_id)
        candidates = [
            {"pseudonym_id": c["pseudonym_id"], "score": c["score"], "requires_consent": True,
             "consent_id": c["consent_id"], "state": c["state"]}
            for c in record["candidates"]
        ]
        return {
            "request_id": request_id, "template": TEMPLATE, "state": record["state"],
            "candidates": candidates, "privacy_cost": record["privacy_cost"],
            "answered": record["answered"], "live_nodes": record["live_nodes"],
            "refused": record["refused"], "deadline": record["deadline"],
            "intros": {c["consent_id"]: c["intro"] for c in record["candidates"]
                       if c.get("intro")},
        }

    def summaries(self) -> list[dict[str, Any]]:
        """One line per live request of this node (``GET /requests``), unordered.

        A request past its deadline is finalised first, as :meth:`view` does, so the
        listing never shows ``collecting`` for a request that can no longer collect.
        """
        out = []
        for _, record in self.state.items(REQ_PREFIX):
            if record["state"] == "collecting" and time.time() >= record["deadline"]:
                self._finalise(record["request_id"])
                record = self.state.get(REQ_PREFIX + record["request_id"]) or record
            out.append(request_summary(record))
        return out

    # ----------------------------------------------------------------- replies

    def on_reply(self, opened: Opened) -> None:
        """A ``psi_reply`` or ``refusal`` from a responder (raises :class:`Refused`)."""
        record = self.state.get(REQ_PREFIX + opened.request_id)
        if record is None:
            raise Refused("unknown_request", "no such request at this requester")
        if record["state"] != "collecting":
            raise Refused("request_closed", "the request is no longer collecting answers")
        responder = opened.sender
        budget = self._budget(opened.body.get("budget"))
        answer: dict[str, Any] = {"responder": responder, "kind": opened.kind,
                                  "matched": False, "budget": budget,
                                  "responder_key": b64e(opened.sender_key),
                                  "received_at": time.time()}
        if opened.kind == "refusal":
            reason = opened.body.get("reason")
            answer["reason"] = reason if isinstance(reason, str) else "refused"
        else:
            answer.update(self._open_psi(record, responder, opened.body))
        ttl = self.settings.warm_intro_session_ttl
        if not self.state.put_if_absent(f"{ANS_PREFIX}{opened.request_id}:{responder}", answer,
                                        ttl=ttl):
            raise Refused("duplicate_reply", f"{responder} already answered this request")
        record["answered"] += 1
        if opened.kind == "refusal":
            record["refused"] += 1
        self._save(record)
        self._maybe_complete(opened.request_id)
        event = self._events.get(opened.request_id)
        if event is not None:
            event.set()

    def _budget(self, value: Any) -> dict[str, int] | None:
        if not isinstance(value, dict):
            return None
        used, limit = value.get("used"), value.get("limit")
        if isinstance(used, int) and isinstance(limit, int) and 0 <= used and limit > 0:
            return {"used": used, "limit": limit}
        return None

    def _open_psi(self, record: dict[str, Any], responder: str,
                  body: dict[str, Any]) -> dict[str, Any]:
        if body.get("protocol") != exchange.PROTOCOL:
            raise Refused("invalid_reply", f"protocol must be {exchange.PROTOCOL}")
        try:
            y_blob = b64d(body.get("y"), "y", limit=1024)
            entries = b64d(body.get("entries"), "entries", limit=MAX_B64_REPLY)
            ciphertext = b64d(body.get("payload"), "payload", limit=1024)
        except ValueError as exc:
            raise Refused("invalid_reply", str(exc)) from None
        context = exchange.binding(record["request_id"], self.core.node_id, responder)
        try:
            match = exchange.open_reply(
                scalar=base64.b64decode(record["scalar"]), real_count=record["real_count"],
                padded_count=record["padded_count"], y_blob=y_blob, entries=entries,
                ciphertext=ciphertext, context=context,
            )
        except psi.InvalidElement as exc:
            raise Refused("invalid_reply", str(exc)) from None
        if match is None:
            return {"matched": False}
        payload = match.payload
        if payload.get("match") is not True:
            return {"matched": False, "connected": True}
        pseudonym, token = payload.get("pseudonym_id"), payload.get("reveal_token")
        target_strength = _finite01(payload.get("target_strength"))
        if (not isinstance(pseudonym, str) or not 0 < len(pseudonym) <= 64
                or not isinstance(token, str) or not 0 < len(token) <= 128
                or target_strength is None):
            raise Refused("invalid_reply", "payload fields missing or out of range")
        return {"matched": True, "pseudonym_id": pseudonym, "reveal_token": token,
                "target_strength": target_strength,
                "local_strength": record["strengths"][match.index]}

    def _maybe_complete(self, request_id: str) -> None:
        record = self.state.get(REQ_PREFIX + request_id)
        if record is None or record["state"] != "collecting":
            return
        live = record["live_nodes"]
        if live is not None and record["answered"] >= live:
            self._finalise(request_id)

    def _finalise(self, request_id: str) -> None:
        """Score the collected answers (§7.4) and open the consent session."""
        record = self._load(request_id)
        if record["state"] != "collecting":
            return
        answers = [value for _, value in self.state.items(f"{ANS_PREFIX}{request_id}:")]
        constraints = record["constraints"]
        scored: list[dict[str, Any]] = []
        seen: set[str] = set()
        for answer in answers:
            if not answer.get("matched"):
                continue
            value = round(score(answer["local_strength"], answer["target_strength"]), 3)
            if value < constraints["min_strength"] or answer["pseudonym_id"] in seen:
                continue
            seen.add(answer["pseudonym_id"])
            scored.append({
                "pseudonym_id": answer["pseudonym_id"], "score": value,
                "consent_id": secrets.token_hex(5), "state": "available",
                "responder": answer["responder"], "responder_key": answer["responder_key"],
                "reveal_token": answer["reveal_token"], "intro": None, "reason": None,
            })
        scored.sort(key=lambda c: c["score"], reverse=True)
        fractions = [a["budget"]["used"] / a["budget"]["limit"] for a in answers if a.get("budget")]
        record.update(state="complete", candidates=scored[: constraints["max_candidates"]],
                      privacy_cost=round(min(1.0, max(fractions, default=0.0)), 3),
                      completed_at=time.time())
        self._save(record)

    # ----------------------------------------------------------------- consent

    async def consent(self, request_id: str, consent_id: str) -> dict[str, Any]:
        """Ask the candidate's responder for the intro (sealed, through its mailbox)."""
        record = self._load(request_id)
        if record["state"] == "collecting":
            self.view(request_id)
            record = self._load(request_id)
            if record["state"] == "collecting":
                raise HTTPProblem(409, "request is still collecting answers",
                                  reason="request_collecting")
        candidate = next((c for c in record["candidates"] if c["consent_id"] == consent_id),
                         None)
        if candidate is None:
            raise HTTPProblem(404, "consent_id not found", reason="unknown_consent")
        if candidate["state"] == "available":
            await self.core.send(
                to=candidate["responder"], to_key=base64.b64decode(candidate["responder_key"]),
                request_id=request_id, kind="reveal_request",
                body={"reveal_token": candidate["reveal_token"], "target": record["target"]},
            )
            record = self._load(request_id)
            for stored in record["candidates"]:
                if stored["consent_id"] == consent_id and stored["state"] == "available":
                    stored["state"] = "pending"
                    stored["consented_at"] = time.time()
            self._save(record)
            candidate = next(c for c in record["candidates"] if c["consent_id"] == consent_id)
        return self._consent_view(request_id, candidate)

    @staticmethod
    def _consent_view(request_id: str, candidate: dict[str, Any]) -> dict[str, Any]:
        state = candidate["state"]
        return {
            "request_id": request_id, "consent_id": candidate["consent_id"],
            "approved": state == "revealed", "pseudonym_id": candidate["pseudonym_id"],
            "intro": candidate["intro"] if state == "revealed" else None,
            "state": state, "reason": candidate.get("reason"),
        }

    async def on_reveal_response(self, opened: Opened) -> None:
        """The responder's decision on a consent (raises :class:`Refused`)."""
        record = self.state.get(REQ_PREFIX + opened.request_id)
        if record is None:
            raise Refused("unknown_request", "no such request at this requester")
        candidate = next((c for c in record["candidates"] if c["responder"] == opened.sender),
                         None)
        if candidate is None:
            raise Refused("unknown_candidate", f"{opened.sender} is no candidate of this request")
        if candidate["state"] != "pending":
            raise Refused("not_pending", f"candidate is {candidate['state']}, not pending")
        body = opened.body
        decision = body.get("state")
        if decision == "revealed":
            intro = body.get("intro")
            revealed_at = body.get("revealed_at")
            if not isinstance(intro, dict) or not isinstance(revealed_at, str):
                raise Refused("invalid_response", "a reveal needs an intro and revealed_at")
            contact = intro.get("target_contact")
            connector = intro.get("connector")
            if (not isinstance(contact, dict) or not isinstance(connector, dict)
                    or connector.get("node_id") != opened.sender):
                raise Refused("invalid_response", "intro connector is not the responder")
            if any(not isinstance(contact.get(k), (str, type(None)))
                   for k in ("name", "email", "org", "role")):
                raise Refused("invalid_response", "contact fields must be strings")
            strength = _finite01(intro.get("relationship_strength"))
            if strength is None:
                raise Refused("invalid_response", "relationship_strength out of range")
            candidate.update(state="revealed", intro=intro, revealed_at=revealed_at)
        elif decision == "declined":
            reason = body.get("reason")
            candidate.update(state="declined",
                             reason=reason if isinstance(reason, str) else "declined")
        else:
            raise Refused("invalid_response", f"unknown decision {decision!r}")
        self._save(record)
        self.core.ctx.count_intro(str(decision), TEMPLATE)
        if decision != "revealed":
            return
        contact = candidate["intro"]["target_contact"]
        target = record["target"]
        self.core.audit({
            "side": "requester", "template": TEMPLATE, "request_id": opened.request_id,
            "consent_id": candidate["consent_id"], "requester_node_id": self.core.node_id,
            "responder_node_id": opened.sender,
            "responder_key_fingerprint": fingerprint(opened.sender_key),
            "target": target, "contact": {k: contact.get(k) for k in ("name", "org", "role")},
            "relationship_strength": candidate["intro"]["relationship_strength"],
            "revealed_at": candidate["revealed_at"],
        })
        await self.core.ctx.emit_revealed(IntroRevealed.model_validate({
            "node_id": self.core.node_id, "side": "requester", "template": TEMPLATE,
            "request_id": opened.request_id, "consent_id": candidate["consent_id"],
            "requester_node_id": self.core.node_id, "responder_node_id": opened.sender,
            "target": {"company": target.get("company"), "role": target.get("role")},
            "contact": {k: contact.get(k) for k in ("name", "org", "role")},
            "relationship_strength": candidate["intro"]["relationship_strength"],
            "revealed_at": candidate["revealed_at"],
        }))
