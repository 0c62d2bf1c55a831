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

    async def emit_revealed(self, event: IntroRevealed) -> None:
        """Deliver ``intro.revealed`` to subscribers within the host's time budget."""
        await self.host.events.emit(INTRO_REVEALED, event)
