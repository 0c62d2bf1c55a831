"""Phase 2: one signed ``warm_intro_reveal`` per approved reveal and side (``neotoma.md`` §3.5).

The handler first persists the exact request body in a durable outbox
(``host.state("neotoma")``), then tries once within the event budget; a background task
drains the outbox with exponential backoff, so an outage or a restart loses no record.
Retries send the stored bytes, so Neotoma answers ``replayed:true`` to a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from darkmesh_neotoma.client import NeotomaClient, NeotomaUnavailable, compact_json
from sdl_core import IntroRevealed, StateArea

log = logging.getLogger("darkmesh.neotoma")

ENTITY_TYPE = "warm_intro_reveal"
SOURCE_PRIORITY = 90
OUTBOX = "outbox:"
DONE = "done:"
DEAD = "dead:"
DONE_TTL_SECONDS = 90 * 86400  # a repeat after this long is still a Neotoma replay

Verdict = Literal["done", "conflict", "bug", "capability_denied", "not_admitted", "auth",
                  "retry"]
_CAPABILITY = re.compile(r'is not permitted to (store|store_structured) entity_type "')
_GUEST = re.compile(r'Access policy ".*" for entity_type ".*" denies "store" for guest callers')


def tuple_of(event: IntroRevealed) -> str:
    return f"{event.node_id}:{event.request_id}:{event.consent_id or '_'}:{event.side}"


def idempotency_key(event: IntroRevealed) -> str:
    return "warm_intro_reveal-" + hashlib.sha256(tuple_of(event).encode()).hexdigest()[:32]


def reveal_entity(event: IntroRevealed) -> dict[str, Any]:
    """The entity, nulls dropped, ``canonical_name`` always set; never the email."""
    target = event.target
    target_org = getattr(target, "org", None) or target.company
    fields: dict[str, Any] = {
        "entity_type": ENTITY_TYPE,
        "canonical_name": f"warm_intro_reveal:{tuple_of(event)}",
        "request_id": event.request_id,
        "consent_id": event.consent_id if event.side == "requester" else None,
        "requester_node_id": event.requester_node_id,
        "responder_node_id": event.responder_node_id,
        "darkmesh_node_id": event.node_id,
        "side": event.side,
        "template": event.template,
        "approved": True,
        "relationship_strength": event.relationship_strength,
        "target_org": target_org,
        "target_role": target.role,
        "target_contact_name": event.contact.name,
        "target_contact_org": event.contact.org,
        "target_contact_role": event.contact.role,
        "revealed_at": event.revealed_at,
        "data_source": f"darkmesh-node:{event.node_id}",
    }
    return {k: v for k, v in fields.items() if v is not None}


def reveal_body(event: IntroRevealed) -> bytes:
    """The exact ``POST /store`` body (top level: key, priority, one entity)."""
    return compact_json({
        "idempotency_key": idempotency_key(event),
        "source_priority": SOURCE_PRIORITY,
        "entities": [reveal_entity(event)],
    })


def classify(status: int, text: str) -> Verdict:
    """§3.5 "Answers": what one ``/store`` answer means for the record."""
    if 200 <= status < 300:
        return "done"
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    inner = data.get("error") if isinstance(data.get("error"), dict) else {}
    code = data.get("error_code") or inner.get("code")
    message = str(data.get("message") or inner.get("message") or "")
    if status == 409 or (status == 400 and code == "ERR_IDEMPOTENCY_MISMATCH"):
        return "conflict"
    if status in (408, 429):
        return "retry"
    if status == 401:
        return "auth"
    if status == 403:
        return "capability_denied"
    if 400 <= status < 500:
        return "bug"
    if status == 500 and _CAPABILITY.search(message):
        return "capability_denied"
    if status == 500 and _GUEST.search(message):
        return "not_admitted"
    return "retry"


@dataclass(kw_only=True)
class Attempt:
    verdict: Verdict
    status: int | None
    detail: str


class Outbox:
    """Pending writes in the node database: ``outbox:<key>`` → body and schedule."""

    def __init__(self, state: StateArea) -> None:
        self.state = state

    def add(self, key: str, body: bytes) -> bool:
        """Persist a new record; False when it is already pending or done."""
        if self.state.get(DONE + key) is not None:
            return False
        entry = {"body": body.decode("utf-8"), "attempts": 0, "next_at": 0.0,
                 "created_at": time.time(), "last_error": None}
        return self.state.put_if_absent(OUTBOX + key, entry)

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k[len(OUTBOX):], v) for k, v in self.state.items(OUTBOX)]

    def depth(self) -> int:
        return len(self.state.items(OUTBOX))

    def dead(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k[len(DEAD):], v) for k, v in self.state.items(DEAD)]

    def finish(self, key: str, verdict: Verdict, detail: str) -> None:
        entry = self.state.get(OUTBOX + key)
        if verdict in ("done", "conflict"):
            self.state.put(DONE + key, {"verdict": verdict, "at": time.time()},
                           ttl=DONE_TTL_SECONDS)
        elif entry is not None:
            # Parked, not dropped: the operator sees it in status and can fix the grant.
            self.state.put(DEAD + key, {**entry, "verdict": verdict, "last_error": detail})
        self.state.delete(OUTBOX + key)

    def reschedule(self, key: str, detail: str, initial: float, ceiling: float) -> float:
        entry = self.state.get(OUTBOX + key)
        if not isinstance(entry, dict):
            return 0.0
        attempts = int(entry.get("attempts", 0)) + 1
        delay: float = min(initial * 2.0 ** (attempts - 1), ceiling)
        delay *= 1 + random.uniform(0, 0.1)  # spread retries of many records
        entry.update(attempts=attempts, next_at=time.time() + delay, last_error=detail)
        self.state.put(OUTBOX + key, entry)
        return delay


class Writeback:
    """The ``intro.revealed`` subscriber and its outbox drainer (one per node)."""

    def __init__(self, *, client: NeotomaClient, outbox: Outbox, enabled: bool,
                 budget_seconds: float, initial_backoff: float, max_backoff: float) -> None:
        self.client = client
        self.outbox = outbox
        self.enabled = enabled
        self.budget = budget_seconds
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.written = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    # ---------------------------------------------------------------- handler

    async def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        if not isinstance(event, IntroRevealed):
            event = IntroRevealed.model_validate(event)
        key = idempotency_key(event)
        if not self.outbox.add(key, reveal_body(event)):
            log.debug("warm_intro_reveal %s already recorded or pending", key)
            return
        self.ensure_worker()
        try:
            # Tried once within the event budget, then left to the outbox.
            async with asyncio.timeout(self.budget * 0.9):
                await self.send(key)
        except TimeoutError:
            self.outbox.reschedule(key, "timed out within the event budget",
                                   self.initial_backoff, self.max_backoff)
            self._poke()

    async def send(self, key: str) -> Attempt:
        """Send one outbox record and settle it."""
        async with self._lock_obj():
            entry = self.outbox.state.get(OUTBOX + key)
            if entry is None:
                return Attempt(verdict="done", status=None, detail="already settled")
            try:
                response = await self.client.store(entry["body"].encode("utf-8"))
            except NeotomaUnavailable as exc:
                return self._retry(key, None, str(exc))
            except RuntimeError as exc:  # no signer any more (settings changed)
                return self._retry(key, None, str(exc))
            verdict = classify(response.status_code, response.text)
            detail = f"HTTP {response.status_code}: {response.text[:300]}"
            if verdict == "retry":
                return self._retry(key, response.status_code, detail)
            self.outbox.finish(key, verdict, detail)
            if verdict == "done":
                self.written += 1
                log.info("warm_intro_reveal %s written to Neotoma", key)
            elif verdict == "conflict":
                log.warning("warm_intro_reveal %s: Neotoma already holds this key with other "
                            "content (a reused v1 request_id); not retried", key)
            elif verdict in ("capability_denied", "not_admitted"):
                self.last_error = detail
                log.error("warm_intro_reveal %s refused (%s): %s; fix the grant with "
                          "`darkmesh neotoma grants provision` (Inspector → Agents → Grants)",
                          key, verdict, response.text[:300])
            else:
                self.last_error = detail
                log.error("warm_intro_reveal %s refused (%s), not retried: %s", key, verdict,
                          detail)
            return Attempt(verdict=verdict, status=response.status_code, detail=detail)

    def _retry(self, key: str, status: int | None, detail: str) -> Attempt:
        self.last_error = detail
        delay = self.outbox.reschedule(key, detail, self.initial_backoff, self.max_backoff)
        log.warning("warm_intro_reveal %s not written (%s); retrying in %.1fs from the outbox",
                    key, detail, delay)
        return Attempt(verdict="retry", status=status, detail=detail)

    def _lock_obj(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # ----------------------------------------------------------------- worker

    def ensure_worker(self) -> None:
        if not self.enabled or (self._task is not None and not self._task.done()):
            return
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="neotoma-writeback-outbox")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def drain_due(self) -> float | None:
        """Send every due record; return seconds until the next one (None if empty)."""
        next_due: float | None = None
        for key, entry in self.outbox.pending():
            due = float(entry.get("next_at", 0.0))
            if due <= time.time():
                await self.send(key)
                refreshed = self.outbox.state.get(OUTBOX + key)
                if refreshed is None:
                    continue
                due = float(refreshed.get("next_at", 0.0))
            wait = max(due - time.time(), 0.0)
            next_due = wait if next_due is None else min(next_due, wait)
        return next_due

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                wait = await self.drain_due()
            except Exception:  # the drainer must survive anything one record does
                log.exception("writeback outbox drain failed")
                wait = self.initial_backoff
            self._wake.clear()
            timeout = 30.0 if wait is None else max(min(wait, 30.0), 0.05)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # _run handles its own errors, so only the cancellation comes back here.
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "outbox_depth": self.outbox.depth() if self.enabled else 0,
            "parked": len(self.outbox.dead()) if self.enabled else 0,
            "written": self.written,
            "last_error": self.last_error,
        }
