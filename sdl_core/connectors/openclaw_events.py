"""OpenClaw events → contacts and interactions (``spec/openclaw.md`` §4–§11).

Pure functions: no I/O. The command in :mod:`sdl_core.connectors.openclaw` reads the
inputs (files, URLs, autodiscovery) and feeds the records here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

DEFAULT_CHANNEL_WEIGHTS: dict[str, float] = {
    "gmail": 1.0,
    "email": 1.0,
    "sms": 0.9,
    "whatsapp": 0.95,
    "telegram": 0.85,
    "slack": 0.75,
    "calendar": 0.8,
    "phone": 0.9,
    "unknown": 0.7,
}

_LIST_KEYS = ("events", "records", "items", "messages", "data", "results")
_DATA_LIST_KEYS = ("events", "records", "items", "messages", "results")
_INBOUND = {"inbound", "incoming", "received"}
_OUTBOUND = {"outbound", "outgoing", "sent"}


def first_non_empty(obj: Mapping[str, Any], *keys: str) -> str:
    """The first value that is not None and whose trimmed string form is non-empty."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            return text
    return ""


# ------------------------------------------------------------------ extraction


def extract_records(document: Any) -> list[dict[str, Any]]:
    """§4: the event objects of one JSON document."""
    if isinstance(document, list):
        return [item for item in document if isinstance(item, dict)]
    if not isinstance(document, dict):
        return []
    for key in _LIST_KEYS:
        value = document.get(key)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
    data = document.get("data")
    if isinstance(data, dict):
        for key in _DATA_LIST_KEYS:
            value = data.get(key)
            if isinstance(value, list):
                return [item for item in value if isinstance(item, dict)]
    return [document] if document else []


def parse_event_text(text: str) -> list[dict[str, Any]]:
    """§3.1 with the §13 robustness fix: whole-document JSON first, then NDJSON.

    :raises ValueError: when the text is neither valid JSON nor NDJSON with objects.
    """
    stripped = text.strip()
    if not stripped:
        return []
    try:
        return extract_records(json.loads(stripped))
    except ValueError:
        pass
    if "\n" in stripped and not stripped.startswith("["):
        objects = []
        for line in stripped.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                objects.append(value)
        if objects:
            return objects
    raise ValueError("not valid JSON (object, array) nor NDJSON with at least one object")


# --------------------------------------------------------------- normalisation


def channel_of(event: Mapping[str, Any]) -> str:
    """§5.1 channel mapping by substring, in the spec's order."""
    raw = first_non_empty(event, "channel", "integration", "provider", "source", "type").lower()
    if not raw:
        return "unknown"
    for needles, channel in (
        (("gmail", "email"), "gmail"),
        (("whatsapp",), "whatsapp"),
        (("sms", "twilio", "text"), "sms"),
        (("calendar", "meeting"), "calendar"),
        (("slack",), "slack"),
        (("telegram",), "telegram"),
        (("call", "phone"), "phone"),
    ):
        if any(needle in raw for needle in needles):
            return channel
    return raw


def _epoch(value: float) -> datetime | None:
    seconds = value / 1000 if value > 1e12 else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def timestamp_of(event: Mapping[str, Any]) -> datetime | None:
    """§5.2: numbers (and all-digit strings, §13) are epoch seconds or milliseconds."""
    for key in ("timestamp", "ts", "created_at", "occurred_at", "date"):
        value = event.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                return None
            return _epoch(float(value))
        text = str(value).strip()
        if not text:
            continue
        if text.isdigit():
            return _epoch(float(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
            except ValueError:
                return None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    return None


def normalise_identifier(value: Any) -> str:
    """§5.3 with the §13 fix: colon-namespaced ids are tested before the phone rule."""
    if value is None:
        return ""
    text = str(value).strip().lower()
    if not text:
        return ""
    if "@" in text:
        return text
    if text.startswith("phone:"):
        digits = re.sub(r"[^0-9+]", "", text[6:])
        return f"phone:{digits}" if digits else ""
    if text.startswith("id:"):
        rest = text[3:].strip()
        return f"id:{rest}" if rest else ""
    if ":" in text:
        return text
    if sum(ch.isdigit() for ch in text) >= 7:
        return "phone:" + re.sub(r"[^0-9+]", "", text)
    return ""


def direction_of(event: Mapping[str, Any]) -> str | None:
    raw = str(event.get("direction") or "").strip().lower()
    if raw in _INBOUND:
        return "inbound"
    if raw in _OUTBOUND:
        return "outbound"
    return None


@dataclass(frozen=True, kw_only=True)
class Party:
    identifier: str
    name: str = ""
    org: str = ""
    role: str = ""


def _party(value: Any) -> Party | None:
    if isinstance(value, dict):
        ident = normalise_identifier(
            first_non_empty(value, "identifier", "email", "phone", "id", "user_id", "address")
        )
        if not ident:
            return None
        return Party(
            identifier=ident,
            name=first_non_empty(value, "name", "full_name", "display_name"),
            org=first_non_empty(value, "org", "company", "organization"),
            role=first_non_empty(value, "role", "title"),
        )
    if isinstance(value, str):
        ident = normalise_identifier(value)
        return Party(identifier=ident) if ident else None
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True, kw_only=True)
class Interaction:
    identifier: str
    direction: str  # inbound | outbound | unknown
    channel: str
    timestamp: datetime | None
    name: str = ""
    org: str = ""
    role: str = ""


def interactions_of(event: Mapping[str, Any], self_ids: frozenset[str]) -> list[Interaction]:
    """§6: the interactions one event yields."""
    channel = channel_of(event)
    ts = timestamp_of(event)
    explicit = direction_of(event)
    direct = normalise_identifier(
        first_non_empty(event, "counterparty_id", "counterparty", "identifier", "email", "phone",
                        "person_id")
    )
    if direct:
        return [
            Interaction(
                identifier=direct,
                direction=explicit or "unknown",
                channel=channel,
                timestamp=ts,
                name=first_non_empty(event, "counterparty_name", "name", "person_name"),
                org=first_non_empty(event, "org", "company", "organization"),
                role=first_non_empty(event, "role", "title"),
            )
        ]
    sender_raw = event.get("from") or event.get("sender")
    sender = _party(sender_raw) if sender_raw else None
    recipients = [
        party
        for key in ("to", "cc", "bcc", "recipients", "participants")
        for item in _as_list(event.get(key))
        if (party := _party(item)) is not None
    ]
    if explicit is not None:
        direction = explicit
    elif sender is None:
        direction = "unknown"
    elif sender.identifier in self_ids:
        direction = "outbound"
    else:
        direction = "inbound"

    def make(party: Party, how: str) -> Interaction:
        return Interaction(identifier=party.identifier, direction=how, channel=channel,
                           timestamp=ts, name=party.name, org=party.org, role=party.role)

    if direction == "inbound":
        if sender is not None and sender.identifier not in self_ids:
            return [make(sender, "inbound")]
        return []
    if direction == "outbound":
        return [make(p, "outbound") for p in recipients if p.identifier not in self_ids]
    seen: set[str] = set()
    out = []
    for party in [*recipients, *([sender] if sender else [])]:
        if party.identifier in self_ids or party.identifier in seen:
            continue
        seen.add(party.identifier)
        out.append(make(party, "unknown"))
    return out


# ------------------------------------------------------------ aggregation, score


@dataclass(kw_only=True)
class Aggregate:
    identifier: str
    total_weight: float = 0.0
    inbound_weight: float = 0.0
    outbound_weight: float = 0.0
    channels: set[str] = field(default_factory=set)
    latest: datetime | None = None
    name: str = ""
    org: str = ""
    role: str = ""

    def strength(self, now: datetime) -> float:
        """§8: volume, bidirectionality, recency and channel diversity."""
        volume = min(1.0, self.total_weight / 20)
        both = self.inbound_weight + self.outbound_weight
        bidirectional = 2 * min(self.inbound_weight, self.outbound_weight) / both if both else 0.0
        if self.latest is None:
            recency = 0.0
        else:
            age_days = max(0.0, (now - self.latest).total_seconds() / 86400)
            recency = math.exp(-age_days / 45)
        diversity = min(1.0, len(self.channels) / 4)
        value = 0.40 * volume + 0.30 * bidirectional + 0.20 * recency + 0.10 * diversity
        return min(1.0, max(0.0, value))


def aggregate(
    interactions: Iterable[Interaction],
    weights: Mapping[str, float],
    self_ids: frozenset[str],
) -> dict[str, Aggregate]:
    """§7: per-identifier totals, in first-seen order."""
    out: dict[str, Aggregate] = {}
    for item in interactions:
        if not item.identifier or item.identifier in self_ids:
            continue
        agg = out.setdefault(item.identifier, Aggregate(identifier=item.identifier))
        weight = weights.get(item.channel, weights.get("unknown", 0.7))
        agg.total_weight += weight
        if item.direction == "inbound":
            agg.inbound_weight += weight
        elif item.direction == "outbound":
            agg.outbound_weight += weight
        agg.channels.add(item.channel)
        if item.timestamp is not None and (agg.latest is None or item.timestamp > agg.latest):
            agg.latest = item.timestamp
        agg.name = agg.name or item.name
        agg.org = agg.org or item.org
        agg.role = agg.role or item.role
    return out


@dataclass(frozen=True, kw_only=True)
class Person:
    name: str = ""
    org: str = ""
    role: str = ""


def parse_people_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Person]:
    """§9: enrichment rows keyed by normalised identifier; the later row wins."""
    people: dict[str, Person] = {}
    for row in rows:
        ident = normalise_identifier(first_non_empty(row, "identifier", "email", "phone", "id"))
        if not ident:
            continue
        people[ident] = Person(
            name=first_non_empty(row, "name", "full_name"),
            org=first_non_empty(row, "org", "company", "organization"),
            role=first_non_empty(row, "role", "title"),
        )
    return people


def parse_weight_overrides(values: Iterable[str]) -> dict[str, float]:
    """``--channel-weight CHANNEL=VALUE`` (§2): silently ignore malformed pairs."""
    weights = dict(DEFAULT_CHANNEL_WEIGHTS)
    for raw in values:
        key, sep, value = raw.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            continue
        try:
            weight = float(value.strip())
        except ValueError:
            continue
        if math.isfinite(weight):
            weights[key] = max(0.0, weight)
    return weights


@dataclass(frozen=True, kw_only=True)
class ScoredContacts:
    contacts: list[dict[str, Any]]
    interactions: list[dict[str, Any]]


def score_contacts(
    events: Iterable[Mapping[str, Any]],
    *,
    self_identifiers: Iterable[str] = (),
    weights: Mapping[str, float] | None = None,
    people: Mapping[str, Person] | None = None,
    min_strength: float = 0.05,
    max_contacts: int = 5000,
    now: datetime | None = None,
) -> ScoredContacts:
    """The whole pipeline from events to the two ingest datasets (§6–§11)."""
    self_ids = frozenset(i for i in (normalise_identifier(s) for s in self_identifiers) if i)
    table = dict(weights or DEFAULT_CHANNEL_WEIGHTS)
    stream: Iterator[Interaction] = (
        item for event in events for item in interactions_of(event, self_ids)
    )
    aggregates = aggregate(stream, table, self_ids)
    moment = now or datetime.now(UTC)
    floor = min(1.0, max(0.0, min_strength))
    scored = [(agg, agg.strength(moment)) for agg in aggregates.values()]
    kept = [pair for pair in scored if pair[1] >= floor]
    kept.sort(key=lambda pair: pair[1], reverse=True)  # stable: ties keep first-seen order
    kept = kept[: max(1, max_contacts)]
    enrich = people or {}
    contacts, interactions = [], []
    for agg, strength in kept:
        person = enrich.get(agg.identifier, Person())
        rounded = round(strength, 3)
        contacts.append({
            "name": person.name or agg.name or agg.identifier,
            "email": agg.identifier,
            "org": person.org or agg.org or "",
            "role": person.role or agg.role or "",
            "strength": rounded,
        })
        interactions.append({"email": agg.identifier, "strength": rounded})
    return ScoredContacts(contacts=contacts, interactions=interactions)
