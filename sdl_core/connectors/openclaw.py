"""``darkmesh ingest openclaw``: contacts and interactions from OpenClaw events.

Inputs (``spec/openclaw.md`` §3): event files, event URLs, then autodiscovered
sources, in that order. Scoring is in :mod:`sdl_core.connectors.openclaw_events`.
Departures from upstream (§13): every discovery path, per-source template and
aggregate parameter is configurable; filtered aggregate URLs are tried before the
bare events URL; inputs are capped; the bearer token goes only to the OpenClaw base
origin; header names compare case-insensitively; a run without
``--self-identifier`` warns.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import click
import httpx

from sdl_core.connectors.common import (
    ConnectorOptions,
    IngestClient,
    IngestError,
    connector_options,
    prepare_auth,
)
from sdl_core.connectors.openclaw_events import (
    extract_records,
    first_non_empty,
    parse_event_text,
    parse_people_rows,
    parse_weight_overrides,
    score_contacts,
)
from sdl_core.errors import DarkmeshError
from sdl_core.protocols import JSONObject

CONNECTOR_NAME = "openclaw-sync"
DISCOVERY_DEFAULTS = ("/api/sources", "/api/connectors")
SOURCE_TEMPLATES = (
    "/api/integrations/{id}/events",
    "/api/sources/{id}/events",
    "/api/connectors/{id}/events",
    "{events}?integration_id={id}",
    "{events}?source={id}",
    "{events}?provider={provider}",
)
AGGREGATE_PARAMS = ("sources=name", "integrations=id", "integration_ids=id", "providers=provider")
_ITEM_KEYS = ("integrations", "sources", "connectors", "items", "data", "results")
_NESTED_KEYS = ("integrations", "sources", "connectors", "items", "results")
_CONNECTED_KEYS = ("connected", "is_connected", "enabled", "active", "ready")
_CONNECTED_STATUS = {"connected", "active", "ready", "enabled", "ok", "healthy", "success"}


class OpenClawError(DarkmeshError):
    """A fatal input problem (§12); the message names the file, URL or flag."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Input caps (§13): bytes per file or reply, events per source and in total."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_response_bytes: int = 32 * 1024 * 1024
    max_events_per_source: int = 200_000
    max_events_total: int = 1_000_000


@dataclass(kw_only=True)
class Collected:
    records: list[JSONObject] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)

    def add(self, label: str, records: list[JSONObject], limits: Limits) -> None:
        if len(records) > limits.max_events_per_source:
            self.truncated.append(f"{label}: kept {limits.max_events_per_source} of "
                                  f"{len(records)} events")
            records = records[: limits.max_events_per_source]
        room = limits.max_events_total - len(self.records)
        if len(records) > room:
            self.truncated.append(f"{label}: total cap {limits.max_events_total} reached")
            records = records[: max(0, room)]
        self.records.extend(records)


# ------------------------------------------------------------------------ inputs


def read_event_file(path: Path, limits: Limits) -> list[JSONObject]:
    try:
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise OpenClawError(f"--events-file {path} is {size} bytes, over the "
                                f"{limits.max_file_bytes}-byte cap")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpenClawError(f"cannot read --events-file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise OpenClawError(f"--events-file {path} is not UTF-8: {exc.reason}") from exc
    try:
        return parse_event_text(text)
    except ValueError as exc:
        raise OpenClawError(f"--events-file {path}: {exc}") from exc


class Fetcher:
    """GETs JSON with the extra headers, a size cap and no redirects.

    The bearer token is added only for URLs on the OpenClaw base origin.
    """

    def __init__(self, *, headers: dict[str, str], token: str, base_url: str, timeout: float,
                 limits: Limits, transport: httpx.BaseTransport | None = None) -> None:
        self.headers = headers
        self.token = token
        self.base_origin = _origin(base_url)
        self.limits = limits
        self.answered: list[str] = []
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)

    def close(self) -> None:
        self.client.close()

    def _headers_for(self, url: str) -> dict[str, str]:
        headers = dict(self.headers)
        has_auth = any(name.lower() == "authorization" for name in headers)
        if self.token and not has_auth and _origin(url) == self.base_origin:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def get_json(self, url: str) -> Any:
        """The JSON reply; raises :class:`OpenClawError` for any failure."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise OpenClawError(f"{url}: only http:// and https:// URLs are fetched")
        try:
            with self.client.stream("GET", url, headers=self._headers_for(url)) as response:
                if not 200 <= response.status_code < 300:
                    raise OpenClawError(f"GET {url} answered HTTP {response.status_code}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.limits.max_response_bytes:
                        raise OpenClawError(f"GET {url}: reply over the "
                                            f"{self.limits.max_response_bytes}-byte cap")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise OpenClawError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
        try:
            value = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise OpenClawError(f"GET {url} did not answer JSON") from exc
        self.answered.append(url)
        return value

    def try_json(self, url: str) -> Any | None:
        try:
            return self.get_json(url)
        except OpenClawError:
            return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def join_url(base: str, path: str) -> str:
    """§3.3: absolute paths unchanged, else appended with exactly one ``/``."""
    if path.startswith(("http://", "https://")):
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


# ----------------------------------------------------------------- autodiscovery


def _truthy(value: Any) -> bool:
    if value is None or value is False or value == 0 or value == "":
        return False
    if isinstance(value, (list, dict, tuple, set)):
        return bool(value)
    return True


def discovery_items(document: Any) -> list[JSONObject]:
    """§3.3 "Items": objects collected under every listed key, else the §4 extraction."""
    if isinstance(document, list):
        return [item for item in document if isinstance(item, dict)]
    items: list[JSONObject] = []
    if isinstance(document, dict):
        for key in _ITEM_KEYS:
            value = document.get(key)
            if isinstance(value, list):
                items.extend(item for item in value if isinstance(item, dict))
            elif isinstance(value, dict):
                for nested in _NESTED_KEYS:
                    inner = value.get(nested)
                    if isinstance(inner, list):
                        items.extend(item for item in inner if isinstance(item, dict))
    return items or extract_records(document)


def is_connected(item: JSONObject) -> bool:
    for key in _CONNECTED_KEYS:
        if key in item:
            return _truthy(item[key])
    status = str(item.get("status") or "").strip().lower()
    if status:
        return status in _CONNECTED_STATUS
    return True


@dataclass(frozen=True, kw_only=True)
class Source:
    source_id: str
    name: str
    provider: str

    def to_json(self) -> JSONObject:
        return {"source_id": self.source_id, "name": self.name, "provider": self.provider}

    def field(self, name: str) -> str:
        return {"id": self.source_id, "name": self.name, "provider": self.provider}.get(name, "")


def source_of(item: JSONObject) -> Source | None:
    source_id = first_non_empty(item, "id", "integration_id", "source_id", "connector_id", "slug",
                                "key", "name", "provider", "type")
    name = first_non_empty(item, "name", "provider", "type", "integration", "connector", "slug")
    if not source_id and not name:
        return None
    name = name or source_id
    provider = first_non_empty(item, "provider", "type") or name
    return Source(source_id=source_id, name=name, provider=provider)


def filter_sources(sources: Iterable[Source], include: Sequence[str],
                   exclude: Sequence[str]) -> list[Source]:
    inc = [t.strip().lower() for t in include if t.strip()]
    exc = [t.strip().lower() for t in exclude if t.strip()]
    kept: list[Source] = []
    seen: set[tuple[str, str]] = set()
    for source in sources:
        text = " ".join((source.source_id, source.name, source.provider)).lower()
        if inc and not any(t in text for t in inc):
            continue
        if any(t in text for t in exc):
            continue
        key = (source.source_id.lower(), source.provider.lower())
        if key in seen:
            continue
        seen.add(key)
        kept.append(source)
    return kept


@dataclass(frozen=True, kw_only=True)
class DiscoveryPaths:
    base_url: str
    events_path: str
    discovery_paths: tuple[str, ...]
    source_templates: tuple[str, ...]
    aggregate_params: tuple[str, ...]


def discover_sources(fetcher: Fetcher, paths: DiscoveryPaths, include: Sequence[str],
                     exclude: Sequence[str]) -> tuple[list[Source], list[JSONObject], JSONObject]:
    """Find connected sources and fetch their events; raises :class:`OpenClawError`."""
    seen_urls: set[str] = set()
    found: list[Source] = []
    for path in paths.discovery_paths:
        url = join_url(paths.base_url, path)
        if url in seen_urls:
            continue
        seen_urls.add(url)
        document = fetcher.try_json(url)
        if document is None:
            continue
        for item in discovery_items(document):
            if is_connected(item) and (source := source_of(item)) is not None:
                found.append(source)
    sources = filter_sources(found, include, exclude)
    if not sources:
        raise OpenClawError("autodiscovery found no connected OpenClaw source")
    events_url = join_url(paths.base_url, paths.events_path)
    filtered = bool(include or exclude)
    candidates: list[str] = []
    for pair in paths.aggregate_params:
        param, _, field_name = pair.partition("=")
        values = [s.field(field_name.strip() or "id") for s in sources]
        values = [v for v in values if v]
        if param.strip() and values:
            candidates.append(f"{events_url}?{urlencode({param.strip(): ','.join(values)})}")
    if not filtered:
        # The bare URL ignores include/exclude filters, so it comes first only without them.
        candidates.insert(0, events_url)
    for url in candidates:
        document = fetcher.try_json(url)
        records = extract_records(document) if document is not None else []
        if records:
            return sources, records, {"mode": "aggregate", "url": url}
    records_all: list[JSONObject] = []
    used: list[str] = []
    for source in sources:
        for template in paths.source_templates:
            rendered = template.format(
                id=quote(source.source_id, safe=""), provider=quote(source.provider, safe=""),
                events=events_url,
            )
            url = join_url(paths.base_url, rendered)
            document = fetcher.try_json(url)
            records = extract_records(document) if document is not None else []
            if records:
                records_all.extend(records)
                used.append(url)
                break
    if not records_all:
        raise OpenClawError(f"autodiscovery found {len(sources)} source(s) but no events")
    return sources, records_all, {"mode": "per_source", "urls": used}


# ------------------------------------------------------------------------ people


def read_people_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            return parse_people_rows(csv.DictReader(handle))
    except OSError as exc:
        raise OpenClawError(f"cannot read --people-file {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise OpenClawError(f"--people-file {path} is not a UTF-8 CSV: {exc}") from exc


def parse_headers(values: Iterable[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


# ----------------------------------------------------------------------- command


@click.command("openclaw")
@click.option("--events-file", "events_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Local events file: JSON object, JSON array or NDJSON (repeatable).")
@click.option("--events-url", "events_urls", multiple=True, metavar="URL",
              help="URL answering a GET with events JSON (repeatable).")
@click.option("--events-header", "events_headers", multiple=True, metavar="KEY=VALUE",
              help="Extra header for event URLs and autodiscovery (repeatable).")
@click.option("--autodiscover", is_flag=True, help="Find connected OpenClaw sources.")
@click.option("--openclaw-base-url", default="http://localhost:3000", show_default=True)
@click.option("--openclaw-events-path", default="/api/events", show_default=True)
@click.option("--openclaw-integrations-path", default="/api/integrations", show_default=True)
@click.option("--openclaw-status-path", default="/api/integrations/status", show_default=True)
@click.option("--openclaw-discovery-path", "discovery_paths", multiple=True,
              help=f"Further discovery endpoints (default {', '.join(DISCOVERY_DEFAULTS)}).")
@click.option("--openclaw-source-template", "source_templates", multiple=True,
              help="Per-source events URL template with {id}, {provider}, {events} "
              "(default: the six upstream templates).")
@click.option("--openclaw-aggregate-param", "aggregate_params", multiple=True,
              metavar="PARAM=FIELD", help="Aggregate query parameter and the source field "
              f"(id|name|provider) it lists (default: {', '.join(AGGREGATE_PARAMS)}).")
@click.option("--openclaw-token", default=None, help="Bearer token for the OpenClaw origin.")
@click.option("--openclaw-token-env", default="OPENCLAW_TOKEN", show_default=True)
@click.option("--include-source", "include", multiple=True)
@click.option("--exclude-source", "exclude", multiple=True)
@click.option("--self-identifier", "self_identifiers", multiple=True,
              help="The operator's own email, phone or id (repeatable); decides direction.")
@click.option("--people-file", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV used to enrich names, orgs and roles.")
@click.option("--channel-weight", "channel_weights", multiple=True, metavar="CHANNEL=VALUE")
@click.option("--min-strength", type=float, default=0.05, show_default=True)
@click.option("--max-contacts", type=int, default=5000, show_default=True)
@connector_options
def openclaw_command(
    events_files: tuple[Path, ...], events_urls: tuple[str, ...], events_headers: tuple[str, ...],
    autodiscover: bool, openclaw_base_url: str, openclaw_events_path: str,
    openclaw_integrations_path: str, openclaw_status_path: str, discovery_paths: tuple[str, ...],
    source_templates: tuple[str, ...], aggregate_params: tuple[str, ...],
    openclaw_token: str | None, openclaw_token_env: str, include: tuple[str, ...],
    exclude: tuple[str, ...], self_identifiers: tuple[str, ...], people_file: Path | None,
    channel_weights: tuple[str, ...], min_strength: float, max_contacts: int,
    options: ConnectorOptions,
) -> None:
    """Ingest contacts scored from OpenClaw events (identity openclaw-sync)."""
    import os

    if not (events_files or events_urls or autodiscover):
        raise click.UsageError("give at least one of --events-file, --events-url or "
                               "--autodiscover")
    if not self_identifiers:
        click.echo("warning: no --self-identifier given: every message with a sender counts as "
                   "inbound and your own address becomes a contact", err=True)
    limits = Limits()
    token = openclaw_token or os.environ.get(openclaw_token_env, "")
    fetcher = Fetcher(headers=parse_headers(events_headers), token=token.strip(),
                      base_url=openclaw_base_url, timeout=options.timeout, limits=limits)
    collected = Collected()
    discovery: JSONObject | None = None
    try:
        for path in events_files:
            collected.add(str(path), read_event_file(path, limits), limits)
        for url in events_urls:
            collected.add(url, extract_records(fetcher.get_json(url)), limits)
        if autodiscover:
            paths = DiscoveryPaths(
                base_url=openclaw_base_url, events_path=openclaw_events_path,
                discovery_paths=(openclaw_integrations_path, openclaw_status_path,
                                 *(discovery_paths or DISCOVERY_DEFAULTS)),
                source_templates=source_templates or SOURCE_TEMPLATES,
                aggregate_params=aggregate_params or AGGREGATE_PARAMS,
            )
            try:
                sources, records, fetch = discover_sources(fetcher, paths, include, exclude)
                collected.add("autodiscovery", records, limits)
                discovery = {"sources": [s.to_json() for s in sources], "fetch": fetch,
                             "records": len(records), "answered_urls": list(fetcher.answered)}
            except OpenClawError as exc:
                if not collected.records:
                    raise
                discovery = {"warning": str(exc), "sources": [], "records": 0}
        people = read_people_file(people_file) if people_file else {}
    except OpenClawError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        fetcher.close()
    scored = score_contacts(
        collected.records, self_identifiers=self_identifiers,
        weights=parse_weight_overrides(channel_weights), people=people,
        min_strength=min_strength, max_contacts=max(1, max_contacts),
    )
    summary: JSONObject = {"events_processed": len(collected.records),
                           "contacts_prepared": len(scored.contacts),
                           "interactions_prepared": len(scored.interactions)}
    if collected.truncated:
        summary["truncated"] = collected.truncated
    if discovery is not None:
        summary["autodiscovered_sources"] = len(discovery.get("sources", []))
        summary["autodiscovery_records"] = discovery.get("records", 0)
    if options.dry_run:
        output: JSONObject = {"summary": summary, "top_contacts": scored.contacts[:5]}
    else:
        try:
            replies = asyncio.run(_ingest(options, scored.contacts, scored.interactions))
        except IngestError as exc:
            raise click.ClickException(str(exc)) from exc
        output = {"summary": summary, "ingest": replies}
    if discovery is not None:
        output["autodiscovery"] = discovery
    click.echo(json.dumps(output, indent=2, ensure_ascii=False))
    sys.stdout.flush()


async def _ingest(options: ConnectorOptions, contacts: list[JSONObject],
                  interactions: list[JSONObject]) -> JSONObject:
    url = options.require_url()
    auth = prepare_auth(options, [CONNECTOR_NAME])[CONNECTOR_NAME]
    async with IngestClient(url, timeout=options.timeout, quiet=options.quiet) as client:
        replies: JSONObject = {}
        for dataset, records in (("contacts", contacts), ("interactions", interactions)):
            # Both datasets are sent even when empty (§11), so the node's counts show.
            if records:
                result = await client.ingest(dataset, records, auth, label=dataset)
                replies[dataset] = {"dataset": dataset, "count": result.count}
            else:
                count = await client.post_batch(dataset, [], auth)
                replies[dataset] = {"dataset": dataset, "count": count}
    return replies
