"""What the protocol modules (v1, v2) share: the host, settings, durable state."""

from __future__ import annotations

from dataclasses import dataclass

from darkmesh_warm_intro.matching import Contact, load_contacts
from darkmesh_warm_intro.settings import WarmIntroSettings
from sdl_core import INTRO_REVEALED, Host, IntroRevealed, StateArea

FEATURE = "warm_intro"


@dataclass(kw_only=True)
class WarmIntroContext:
    host: Host
    settings: WarmIntroSettings
    state: StateArea

    @classmethod
    def create(cls, host: Host, settings: WarmIntroSettings) -> WarmIntroContext:
        return cls(host=host, settings=settings, state=host.state(FEATURE))

    @property
    def node_id(self) -> str:
        return self.host.settings.node_id

    async def contacts(self) -> list[Contact]:
        """The node's contacts, read from whichever store is configured (vault, Neotoma)."""
        return await load_contacts(self.host.store)

    # Metrics (``GET /darkmesh/metrics``). Stages: ``requested`` (this node published a
    # request), ``answered`` (this node answered a post: a v2 reply or refusal, a v1
    # answer delivered), ``revealed`` and ``declined`` (a reveal decided, counted on the
    # side that decided it and on the requester when the decision arrives).

    def count_intro(self, stage: str, template: str) -> None:
        """``darkmesh_intros{stage, template}`` += 1."""
        self.host.metrics.intros.labels(stage=stage, template=template).inc()

    def count_post(self, template: str) -> None:
        """``darkmesh_relay_posts{template}`` += 1: a relay post handled by this node."""
        self.host.metrics.relay_posts.labels(template=template).inc()

    def count_message(self, direction: str) -> None:
        """``darkmesh_mailbox_messages{direction}`` += 1 (``sent`` / ``received``)."""
        self.host.metrics.mailbox_messages.labels(direction=direction).inc()

    async def emit_revealed(self, event: IntroRevealed) -> None:
        """Deliver ``intro.revealed`` to subscribers within the host's time budget."""
        await self.host.events.emit(INTRO_REVEALED, event)
