"""Entities, observations, identity and the reducer (``neotoma.md`` §2.3–2.4, §3.1–3.4)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin.errors import StandinError
from standin.grants import iso

CONTACT_FIELDS = (
    "schema_version", "name", "email", "phone", "organization", "role", "title",
    "linkedin_url", "connected_on", "data_source", "source_owner", "type", "contact_type",
    "category", "platform", "address", "country", "website", "notes", "contact_id",
    "external_id", "first_contact_date", "last_contact_date", "created_date", "updated_date",
)
HIGHEST_PRIORITY = {
    "contact": {"name", "email", "phone", "external_id", "title", "linkedin_url"},
}
SCHEMA_VERSION = {"contact": "1.1", "company": "1.0"}
NAME_KEYS = ("canonical_name", "name", "full_name", "title", "email", "url")
ID_KEYS = ("message_id", "turn_key", "thread_id", "external_id", "source_id", "id", "uuid",
           "company_id", "person_id", "contact_id")
METADATA_FIELDS = {"entity_type", "schema_version", "source_priority", "observation_source"}
STATUS_TOKENS = {"active", "inactive", "pending", "approved", "declined", "completed",
                 "open", "closed", "true", "false", "yes", "no", "draft", "archived"}
# Higher wins when priorities tie (§3.4); Neotoma does not publish its ranking, so the
# stand-in ranks direct human input first and machine summaries last.
SOURCE_RANK = {"human": 5, "sensor": 4, "import": 3, "sync": 2, "workflow_state": 1,
               "llm_summary": 0}
OBSERVATION_SOURCES = tuple(SOURCE_RANK)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def entity_id_for(entity_type: str, canonical_name: str) -> str:
    digest = hashlib.sha256(f"{entity_type}\x1f{canonical_name}".encode()).hexdigest()
    return "ent_" + digest[:24]


@dataclass(kw_only=True)
class Observation:
    observation_id: str
    fields: dict[str, Any]
    source_priority: int
    observation_source: str
    observed_at: float
    serial: int
    #: Who wrote it (§1.1, §1.5): the admitted agent's grant and key, or the user.
    #: Python-side only, for assertions; no route serves it.
    attribution: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Entity:
    entity_id: str
    entity_type: str
    user_id: str
    canonical_name: str
    explicit_name: bool
    created_at: float
    observations: list[Observation] = field(default_factory=list)

    @property
    def last_observation_at(self) -> float:
        return max(o.observed_at for o in self.observations)

    def reduce(self) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        """(snapshot, provenance, fields cleared by a winning null under highest_priority)."""
        priority_fields = HIGHEST_PRIORITY.get(self.entity_type, set())
        keys: list[str] = []
        for obs in self.observations:
            for key in obs.fields:
                if key not in keys:
                    keys.append(key)
        snapshot: dict[str, Any] = {}
        provenance: dict[str, str] = {}
        cleared: list[str] = []
        for key in keys:
            carriers = [o for o in self.observations if key in o.fields]
            if key in priority_fields:
                winner = max(carriers, key=lambda o: (
                    o.source_priority, SOURCE_RANK.get(o.observation_source, 0),
                    o.observed_at, o.serial))
            else:
                winner = max(carriers, key=lambda o: (o.observed_at, o.serial))
            value = winner.fields[key]
            if value is None:
                if key in priority_fields:
                    cleared.append(key)
                continue
            snapshot[key] = value
            provenance[key] = winner.observation_id
        return snapshot, provenance, cleared

    def to_json(self, include_snapshots: bool = True) -> dict[str, Any]:
        snapshot, provenance, _ = self.reduce()
        last = iso(self.last_observation_at)
        return {
            "entity_id": self.entity_id,
            "entity_type": self.entity_type,
            "canonical_name": self.canonical_name,
            "schema_version": SCHEMA_VERSION.get(self.entity_type, "0"),
            "snapshot": snapshot if include_snapshots else {},
            "observation_count": len(self.observations),
            "last_observation_at": last,
            "provenance": provenance if include_snapshots else {},
            "computed_at": last,
            "merged_to_entity_id": None,
            "merged_at": None,
        }


def _skippable(value: str) -> bool:
    text = value.strip()
    return (not text or bool(_ISO.match(text)) or bool(_NUMBER.match(text))
            or text.lower() in STATUS_TOKENS)


def resolve_identity(entity_type: str, data: dict[str, Any]) -> tuple[str, str, bool]:
    """(canonical name, identity rule, explicit?) for one submitted entity (§3.3)."""
    explicit = data.get("canonical_name")
    if isinstance(explicit, str) and explicit.strip():
        return explicit, "name_key:canonical_name", True
    for key in NAME_KEYS[1:]:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip(), f"name_key:{key}", False
    if entity_type != "contact":
        for key in ID_KEYS:
            value = data.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                return str(value), f"id_key:{key}", False
        for key in sorted(data):
            value = data[key]
            if key in METADATA_FIELDS or not isinstance(value, str) or _skippable(value):
                continue
            return value.strip(), f"heuristic:{key}", False
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16], "content_hash", False


class EntityStore:
    """Every user's entities, ordered by ``entity_id``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entities: dict[tuple[str, str], Entity] = {}
        self._serial = 0

    def upsert(
        self, user_id: str, data: dict[str, Any], *, source_priority: int,
        observation_source: str, observed_at: float | None = None,
        attribution: dict[str, Any] | None = None,
    ) -> tuple[Entity, str, str, Observation, list[dict[str, Any]]]:
        """Add one observation; return (entity, action, identity rule, observation, warnings)."""
        entity_type = str(data["entity_type"])
        canonical, rule, explicit = resolve_identity(entity_type, data)
        entity_id = entity_id_for(entity_type, canonical)
        now = self.clock() if observed_at is None else observed_at
        fields = {k: v for k, v in data.items() if k != "entity_type"}
        warnings: list[dict[str, Any]] = []
        if entity_type == "contact":
            fields.pop("canonical_name", None)
            for key in sorted(set(fields) - set(CONTACT_FIELDS)):
                warnings.append({
                    "code": "UNKNOWN_FIELD",
                    "message": f'Field "{key}" is not declared on the contact schema; it is '
                               "kept on the observation but not in the snapshot.",
                    "entity_type": entity_type, "entity_id": entity_id,
                })
                fields.pop(key)
        self._serial += 1
        obs = Observation(
            observation_id=str(uuid.uuid4()), fields=fields, source_priority=source_priority,
            observation_source=observation_source, observed_at=now, serial=self._serial,
            attribution=dict(attribution or {}),
        )
        key = (user_id, entity_id)
        entity = self.entities.get(key)
        action = "matched_existing"
        if entity is None:
            action = "created"
            entity = Entity(entity_id=entity_id, entity_type=entity_type, user_id=user_id,
                            canonical_name=canonical, explicit_name=explicit, created_at=now)
            self.entities[key] = entity
        entity.observations.append(obs)
        _, _, cleared = entity.reduce()
        for name in cleared:
            if name in fields and fields[name] is None:
                warnings.append({
                    "code": "NULL_CLEARED_FIELD",
                    "message": f'{entity_type} field "{name}" was cleared by a null observation '
                               "under `highest_priority` reduction.",
                    "entity_type": entity_type, "entity_id": entity_id,
                })
        return entity, action, rule, obs, warnings

    def get(self, user_id: str, entity_id: str) -> Entity | None:
        return self.entities.get((user_id, entity_id))

    def listing(self, user_id: str, types: list[str] | None) -> list[Entity]:
        rows = [e for (uid, _), e in self.entities.items()
                if uid == user_id and (types is None or e.entity_type in types)]
        return sorted(rows, key=lambda e: e.entity_id)


def encode_cursor(after: str, sort_order: str) -> str:
    raw = json.dumps({"after": after, "sort_order": sort_order}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort_order: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = data["after"]
        minted = data["sort_order"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StandinError(400, "INVALID_CURSOR", "Cursor is malformed or expired.") from exc
    if not isinstance(after, str) or minted != sort_order:
        raise StandinError(400, "INVALID_CURSOR",
                           "Cursor was minted under a different sort_order.")
    return after
