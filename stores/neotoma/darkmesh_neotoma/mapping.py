"""Neotoma entity → Darkmesh contact, and the relationship strength (``neotoma.md`` §3.1–3.2)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sdl_core import clamp01, normalise_email

# First non-empty source wins, in this order (§3.1). canonical_name comes last for the
# name because writers set it to "contact:<email>".
ID_FIELDS = ("entity_id", "id")
NAME_FIELDS = ("name", "full_name", "display_name", "canonical_name")
EMAIL_FIELDS = ("email", "primary_email", "work_email")
ORG_FIELDS = ("org", "company", "organization", "current_company", "employer")
ROLE_FIELDS = ("role", "title", "job_title")
OBSERVATION_COUNT_FIELDS = ("observation_count", "observations_count")
RELATIONSHIP_COUNT_FIELDS = ("relationship_count", "relationships_count")
LAST_SEEN_FIELDS = ("last_observation_at", "updated_at", "last_seen_at")

# e-folding constants (upstream calls them "half-life", which they are not).
VOLUME_EFOLD = 8.0
RELATIONSHIP_EFOLD = 6.0
RECENCY_EFOLD_DAYS = 45.0


@dataclass(frozen=True, kw_only=True)
class Signals:
    """What the strength is computed from."""

    observation_count: int
    relationship_count: int
    last_observation: float | None  # epoch seconds


def strength(signals: Signals, now: float) -> float:
    """``clamp01(0.45·volume + 0.20·relationships + 0.35·recency)``, unrounded."""
    volume = 1.0 - math.exp(-max(signals.observation_count, 0) / VOLUME_EFOLD)
    relationships = 1.0 - math.exp(-max(signals.relationship_count, 0) / RELATIONSHIP_EFOLD)
    if signals.last_observation is None:
        recency = 0.0
    else:
        age_days = max(now - signals.last_observation, 0.0) / 86400.0
        recency = math.exp(-age_days / RECENCY_EFOLD_DAYS)
    return clamp01(0.45 * volume + 0.20 * relationships + 0.35 * recency)


def _text(value: Any) -> str:
    if value is None or isinstance(value, (bool, dict, list)):
        return ""
    return str(value).strip()


def _first(fields: Mapping[str, Any], names: Sequence[str]) -> str:
    for name in names:
        text = _text(fields.get(name))
        if text:
            return text
    return ""


def _count(fields: Mapping[str, Any], names: Sequence[str], list_field: str | None) -> int:
    for name in names:
        value = fields.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return max(value, 0)
        if isinstance(value, float) and math.isfinite(value):
            return max(int(value), 0)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
    if list_field is not None and isinstance(fields.get(list_field), list):
        return len(fields[list_field])
    return 0


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch seconds, epoch milliseconds (> 1e12) or ISO-8601.

    A naive ISO value is UTC. Anything unparsable is ``None``.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)  # 3.11 reads a trailing Z
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    else:
        return None
    if not math.isfinite(number):
        return None
    return number / 1000.0 if number > 1e12 else number


def signals_of(fields: Mapping[str, Any]) -> Signals:
    last: float | None = None
    for name in LAST_SEEN_FIELDS:
        last = parse_timestamp(fields.get(name))
        if last is not None:
            break
    return Signals(
        observation_count=_count(fields, OBSERVATION_COUNT_FIELDS, "observations"),
        relationship_count=_count(fields, RELATIONSHIP_COUNT_FIELDS, None),
        last_observation=last,
    )


def overlay(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity's top-level fields with its ``snapshot`` laid over them."""
    merged = {k: v for k, v in entity.items() if k != "snapshot"}
    snapshot = entity.get("snapshot")
    if isinstance(snapshot, Mapping):
        merged.update(snapshot)
    return merged


@dataclass(frozen=True, kw_only=True)
class MappedContact:
    """One contact as Darkmesh stores it, with its strength."""

    name: str
    email: str
    org: str
    role: str
    strength: float
    neotoma_entity_id: str

    def contact(self) -> dict[str, Any]:
        """The ``contacts`` record."""
        return {
            "name": self.name,
            "email": self.email,
            "org": self.org,
            "role": self.role,
            "strength": self.strength,
            "neotoma_entity_id": self.neotoma_entity_id,
        }

    def interaction(self) -> dict[str, Any] | None:
        """The ``interactions`` record, only for contacts with an email."""
        if not self.email:
            return None
        return {"email": self.email, "strength": self.strength}


def map_entity(
    entity: Mapping[str, Any], *, now: float, self_identifiers: Iterable[str] = ()
) -> MappedContact | None:
    """Map one entity, or ``None`` when it is skipped (no id, merged away, or the
    operator's own identifier)."""
    if not isinstance(entity, Mapping):
        return None
    if _text(entity.get("merged_to_entity_id")):
        return None
    fields = overlay(entity)
    entity_id = _first(fields, ID_FIELDS)
    if not entity_id:
        return None
    email = normalise_email(_first(fields, EMAIL_FIELDS))
    own = {normalise_email(x) for x in self_identifiers}
    if email and email in own:
        return None
    name = _first(fields, NAME_FIELDS) or email or entity_id
    return MappedContact(
        name=name,
        email=email,
        org=_first(fields, ORG_FIELDS),
        role=_first(fields, ROLE_FIELDS),
        strength=round(strength(signals_of(fields), now), 3),
        neotoma_entity_id=entity_id,
    )


def map_entities(
    entities: Iterable[Mapping[str, Any]], *, now: float, self_identifiers: Iterable[str] = ()
) -> tuple[list[MappedContact], int]:
    """Map many entities; return (contacts, skipped count)."""
    own = list(self_identifiers)
    mapped: list[MappedContact] = []
    skipped = 0
    for entity in entities:
        contact = map_entity(entity, now=now, self_identifiers=own)
        if contact is None:
            skipped += 1
        else:
            mapped.append(contact)
    return mapped, skipped


def dataset_record(entity: Mapping[str, Any]) -> dict[str, Any] | None:
    """A record of a non-contact dataset (§3.7): snapshot fields + ``neotoma_entity_id``."""
    if not isinstance(entity, Mapping) or _text(entity.get("merged_to_entity_id")):
        return None
    entity_id = _first(entity, ID_FIELDS)
    if not entity_id:
        return None
    snapshot = entity.get("snapshot")
    record = dict(snapshot) if isinstance(snapshot, Mapping) else {}
    record["neotoma_entity_id"] = entity_id
    return record
