"""Tier computation: pure functions over ``writer_activity`` records.

A record is one observation of a writer's activity, e.g.::

    {"id": "obs-17", "writer": "ana@example.com", "topic": "ai-content",
     "kind": "post", "observed_at": "2026-11-02T09:30:00Z", "body": "…"}

Only ``id`` (else ``neotoma_entity_id``), ``writer``, ``topic``, ``kind`` and
``observed_at`` are read. ``body`` and every other field stay on the node: an answer
carries a tier, counts and the ids of the observations it used, nothing else.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from darkmesh_writer_tier.settings import WriterTierSettings
from sdl_core import record_key

Tier = Literal["unknown", "emerging", "active", "established", "expert"]
DATASET = "writer_activity"


def normalise(value: Any) -> str:
    """NFKC, trimmed, lower-cased text ('' for anything that is not a string)."""
    if not isinstance(value, str):
        return ""
    return unicodedata.normalize("NFKC", value).strip().lower()


def observation_id(record: dict[str, Any]) -> str:
    """The id an answer cites: the record's own id, the Neotoma entity id, else its key."""
    for name in ("id", "neotoma_entity_id"):
        value = record.get(name)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value).strip()
    return record_key(DATASET, record)


def _day(value: Any) -> str | None:
    if isinstance(value, (int, float)) and value > 0:
        seconds = value / 1000 if value > 1e12 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC).date().isoformat()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).date().isoformat()
    return None


@dataclass(kw_only=True)
class TierCounts:
    observations: int = 0
    posts: int = 0
    comments: int = 0
    other: int = 0
    active_days: int = 0
    observation_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, int]:
        return {
            "observations": self.observations,
            "posts": self.posts,
            "comments": self.comments,
            "other": self.other,
            "active_days": self.active_days,
        }


def count_activity(records: Iterable[dict[str, Any]], writer: str, topic: str) -> TierCounts:
    """Counts of ``writer``'s observations in ``topic`` (both compared normalised)."""
    want_writer, want_topic = normalise(writer), normalise(topic)
    counts = TierCounts()
    days: set[str] = set()
    for record in records:
        if normalise(record.get("writer")) != want_writer:
            continue
        if normalise(record.get("topic")) != want_topic:
            continue
        counts.observations += 1
        kind = normalise(record.get("kind")) or "post"
        if kind == "post":
            counts.posts += 1
        elif kind == "comment":
            counts.comments += 1
        else:
            counts.other += 1
        day = _day(record.get("observed_at"))
        if day is not None:
            days.add(day)
        counts.observation_ids.append(observation_id(record))
    counts.active_days = len(days)
    counts.observation_ids.sort()
    return counts


def tier_for(counts: TierCounts, settings: WriterTierSettings) -> Tier:
    """The tier the counts reach; thresholds come from the settings."""
    if counts.observations == 0:
        return "unknown"
    if counts.posts >= settings.expert_posts and counts.active_days >= settings.expert_active_days:
        return "expert"
    if counts.posts >= settings.established_posts:
        return "established"
    if counts.posts >= settings.active_posts:
        return "active"
    return "emerging"
