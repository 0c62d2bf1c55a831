"""Events and the bus that delivers them to subscribers within a time budget.

Events are not hooks: subscribers are objects registered through
``darkmesh_register_subscribers``. ``emit`` waits at most the budget; a handler still
running then keeps running in the background (so a writeback can finish), and a
handler that raises is logged, never propagated.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("darkmesh.events")

Handler = Callable[[Any], Awaitable[None]]

INTRO_REVEALED: Literal["intro.revealed"] = "intro.revealed"


class TargetRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    company: str | None = None
    role: str | None = None


class RevealedContact(BaseModel):
    """The revealed contact, never with its email."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str | None = None
    org: str | None = None
    role: str | None = None


class IntroRevealed(BaseModel):
    """Emitted once per approved reveal and side (not for a consent served from cache)."""

    model_config = ConfigDict(frozen=True)

    event: Literal["intro.revealed"] = INTRO_REVEALED
    node_id: str = Field(description="the node writing the event")
    side: Literal["requester", "responder"]
    template: str
    request_id: str
    consent_id: str | None = Field(default=None, description="requester side only")
    requester_node_id: str
    responder_node_id: str
    target: TargetRef
    contact: RevealedContact
    relationship_strength: float
    revealed_at: str = Field(description="ISO-8601 UTC, fixed at approval")


class EventBus:
    """Delivers events to subscribers within ``budget_seconds``; never raises to the emitter."""

    def __init__(self, budget_seconds: float = 2.0) -> None:
        self.budget = budget_seconds
        self._handlers: dict[str, list[tuple[str, Handler]]] = defaultdict(list)
        self._background: set[asyncio.Task[None]] = set()
        self.failures = 0
        self.timeouts = 0

    def subscribe(self, event: str, name: str, handler: Handler) -> None:
        self._handlers[event].append((name, handler))

    def subscribers(self, event: str) -> list[str]:
        return [name for name, _ in self._handlers.get(event, [])]

    async def emit(self, event: str, payload: Any) -> None:
        handlers = self._handlers.get(event, [])
        if not handlers:
            return
        tasks = [
            asyncio.create_task(self._run(name, handler, payload), name=f"event:{event}:{name}")
            for name, handler in handlers
        ]
        _done, pending = await asyncio.wait(tasks, timeout=self.budget)
        for task in pending:
            self.timeouts += 1
            log.warning("subscriber %s still running after the %.1fs budget", task.get_name(),
                        self.budget)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run(self, name: str, handler: Handler, payload: Any) -> None:
        try:
            await handler(payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("subscriber %s failed; the request that emitted the event is unaffected",
                          name)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for background handlers (at shutdown), then cancel the rest."""
        if not self._background:
            return
        _, pending = await asyncio.wait(set(self._background), timeout=timeout)
        for task in pending:
            task.cancel()
