"""Phase 0: the sync connector's logic (``neotoma.md`` §4), separate from its CLI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from darkmesh_neotoma.client import NeotomaClient
from darkmesh_neotoma.mapping import MappedContact, map_entities

DEFAULT_MIN_STRENGTH = 0.05
DEFAULT_MAX_CONTACTS = 2000
CONNECTOR_NAME = "neotoma-sync"


@dataclass(kw_only=True)
class SyncPlan:
    """What the connector would ingest, strongest first."""

    contacts: list[MappedContact]
    entities_received: int
    skipped: int
    neotoma_url: str
    entity_type: str

    def contact_records(self) -> list[dict[str, Any]]:
        return [c.contact() for c in self.contacts]

    def interaction_records(self) -> list[dict[str, Any]]:
        return [i for c in self.contacts if (i := c.interaction()) is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "entities_received": self.entities_received,
            "contacts_mapped": len(self.contacts),
            "contacts_skipped": self.skipped,
            "interactions_prepared": len(self.interaction_records()),
            "neotoma_url": self.neotoma_url,
            "entity_type": self.entity_type,
        }


def select(
    entities: Iterable[dict[str, Any]], *, now: float, self_identifiers: Iterable[str],
    min_strength: float, max_contacts: int,
) -> tuple[list[MappedContact], int, int]:
    """(kept contacts strongest first, entities received, skipped)."""
    rows = list(entities)
    mapped, _ = map_entities(rows, now=now, self_identifiers=self_identifiers)
    kept = [c for c in mapped if c.strength >= min_strength]
    # Stable sort: equal strengths keep Neotoma's (entity id) order.
    kept.sort(key=lambda c: c.strength, reverse=True)
    kept = kept[:max_contacts]
    return kept, len(rows), len(rows) - len(kept)


async def plan_sync(
    client: NeotomaClient, *, entity_type: str, self_identifiers: Iterable[str],
    min_strength: float = DEFAULT_MIN_STRENGTH, max_contacts: int = DEFAULT_MAX_CONTACTS,
    max_entities: int | None = None, timeout: float | None = None,
    on_page: Callable[[int], None] | None = None,
) -> SyncPlan:
    listing = await client.list_entities(entity_type, cap=max_entities, timeout=timeout,
                                         on_page=on_page)
    kept, received, skipped = select(
        listing.entities, now=time.time(), self_identifiers=self_identifiers,
        min_strength=min_strength, max_contacts=max_contacts,
    )
    return SyncPlan(contacts=kept, entities_received=received, skipped=skipped,
                    neotoma_url=client.base_url, entity_type=entity_type)
