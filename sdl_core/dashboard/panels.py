"""What each dashboard panel shows, gathered per page view.

Core facts come from the host (settings, store counts, ``plugin_status()``, the plugin
list, redacted settings). Skill facts come only from the skill's documented routes
(:mod:`sdl_core.dashboard.node_api`); a panel whose source fails shows the error
instead of breaking the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sdl_core.catalog import settings_models
from sdl_core.dashboard.node_api import WARM_INTRO, NodeApi, NodeApiError
from sdl_core.dashboard.trust import TrustPanel
from sdl_core.errors import DarkmeshError
from sdl_core.plugins import plugin_infos
from sdl_core.settings import NodeSettings, RelaySettings, redacted

if TYPE_CHECKING:
    from sdl_core.host import Host

#: Most rows a list panel renders (newest first).
MAX_ROWS = 50
WARM_INTRO_PATH = f"/darkmesh/skills/{WARM_INTRO}"


@dataclass
class Panel:
    """One panel's data, or why it has none."""

    data: Any = None
    error: str | None = None
    unavailable: str | None = None


@dataclass
class DashboardView:
    node: dict[str, Any]
    integrations: Panel
    status: Panel
    approvals: Panel
    intros: Panel
    lookup: Panel | None
    reveals: Panel
    keys: Panel
    trust: Panel
    plugins: list[dict[str, Any]]
    settings: list[dict[str, Any]]
    notices: list[tuple[str, str]] = field(default_factory=list)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


async def _skill_panel(api: NodeApi, path: str, key: str, *,
                       newest_first: bool = False) -> Panel:
    """A list from a skill route, newest first: routes that list oldest first (the
    audit log, approvals) are reversed; ``newest_first`` ones are kept as they come."""
    if not api.has_skill(WARM_INTRO):
        return Panel(unavailable="warm-intro skill not installed (pip install "
                     "darkmesh-warm-intro)")
    try:
        data = await api.skill(WARM_INTRO, "GET", path)
    except NodeApiError as exc:
        return Panel(error=str(exc))
    items = data.get(key, []) if isinstance(data, dict) else []
    if not isinstance(items, list):
        return Panel(data=[])
    return Panel(data=(items if newest_first else list(reversed(items)))[:MAX_ROWS])


async def integrations_panel(host: Host) -> Panel:
    required = list(host.settings.required_integrations)
    names = required + sorted(host.datasets() - set(required))
    rows = []
    try:
        for name in names:
            count = await host.store.count(name)
            rows.append({"name": name, "records": count, "required": name in required,
                         "ready": count > 0})
    except Exception as exc:  # noqa: BLE001 - a store probe must never break the page
        return Panel(error=f"store {host.settings.store!r}: {type(exc).__name__}: {exc}")
    ready = all(r["ready"] for r in rows if r["required"])
    return Panel(data={"ready": ready, "rows": rows})


async def status_panel(host: Host) -> Panel:
    blocks = await host.plugin_status()
    return Panel(data=[{"name": name, "json": _pretty(block)} for name, block in
                       sorted(blocks.items())])


def node_card(host: Host) -> dict[str, Any]:
    s = host.settings
    return {
        "node_id": s.node_id, "pseudonym_id": s.pseudonym_id or s.node_id,
        "listen_url": s.listen_url, "relay_url": s.relay_url or "(none)",
        "auth_mode": s.auth_mode, "store": s.store, "templates": host.templates(),
        "started": host.started, "listener": s.listener and bool(s.relay_url),
        "operator": f"darkmesh-operator@{s.node_id}",
    }


def _epoch(value: Any) -> float:
    """Epoch seconds of a listing's time (epoch number or ISO-8601); 0 when unknown."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return 0.0
        return parsed.replace(tzinfo=parsed.tzinfo or UTC).timestamp()
    return 0.0


def _reveal_rows(reveals: Panel) -> list[dict[str, Any]]:
    return [{"request_id": r.get("request_id"), "side": r.get("side"), "state": "revealed",
             "target": r.get("target") or {}, "contact": r.get("contact") or {},
             "peer": r.get("responder_node_id") if r.get("side") == "requester"
             else r.get("requester_node_id"), "at": r.get("revealed_at")}
            for r in (reveals.data or [])]


def _request_row(row: dict[str, Any]) -> dict[str, Any]:
    """A request of this node, its state told as the intro's: revealed, pending, declined,
    else the request's own (collecting, complete)."""
    state = row.get("state")
    for counted in ("revealed", "pending", "declined"):
        if isinstance(row.get(counted), int) and row[counted] > 0:
            state = counted
            break
    return {**row, "state": state}


async def intros_panel(api: NodeApi, reveals: Panel) -> Panel:
    """Recent intros, every one this node took part in, newest first: with the skill's
    request listing (``GET /requests``), the requests this node made plus the reveals it
    answered as a responder (audit log); without it, the audit log alone."""
    if not api.has_skill(WARM_INTRO):
        return Panel(unavailable=reveals.unavailable)
    if api.serves("GET", f"{WARM_INTRO_PATH}/requests"):
        # The warm-intro listing is newest first already (its documented order).
        listing = await _skill_panel(api, "/requests", "requests", newest_first=True)
        if listing.data is None:
            return listing
        rows = [_request_row(r) for r in listing.data if isinstance(r, dict)]
        rows += [r for r in _reveal_rows(reveals) if r["side"] != "requester"]
        rows.sort(key=lambda r: _epoch(r.get("at")), reverse=True)
        return Panel(data=rows[:MAX_ROWS])
    if reveals.error:
        return Panel(error=reveals.error)
    return Panel(data=_reveal_rows(reveals))


async def lookup_panel(api: NodeApi, request_id: str) -> Panel:
    """One intro request's status (``GET /requests/{id}``), for the lookup form."""
    if not api.has_skill(WARM_INTRO):
        return Panel(unavailable="warm-intro skill not installed")
    try:
        data = await api.skill(WARM_INTRO, "GET", f"/requests/{request_id}")
    except NodeApiError as exc:
        return Panel(error=str(exc))
    return Panel(data=data)


async def keys_panel(api: NodeApi) -> Panel:
    if not api.has_skill(WARM_INTRO):
        return Panel(unavailable="warm-intro skill not installed")
    try:
        return Panel(data=await api.skill(WARM_INTRO, "GET", "/keys"))
    except NodeApiError as exc:
        return Panel(error=str(exc))


def trust_panel(host: Host) -> Panel:
    panel = TrustPanel(host)
    reason = panel.unavailable_reason()
    if reason is not None:
        return Panel(unavailable=reason)
    try:
        return Panel(data=panel.listing())
    except Exception as exc:  # noqa: BLE001 - the registry file is the operator's to fix
        return Panel(error=f"{type(exc).__name__}: {exc}")


def plugins_rows(host: Host) -> list[dict[str, Any]]:
    return [info.to_json() for info in plugin_infos(host.pm)]


def settings_rows(host: Host) -> list[dict[str, Any]]:
    """The node's settings and each installed plugin's, every secret redacted."""
    out = [{"owner": "darkmesh-sdl", "section": "node", "error": None,
            "json": _pretty(redacted(host.settings))}]
    for entry in settings_models(host.pm):
        if entry.model in (NodeSettings, RelaySettings):
            continue
        try:
            values = redacted(host.plugin_settings(entry.model, plugin=entry.owner))
            out.append({"owner": entry.owner, "section": entry.section, "error": None,
                        "json": _pretty(values)})
        except DarkmeshError as exc:
            out.append({"owner": entry.owner, "section": entry.section, "error": str(exc),
                        "json": ""})
    return out


async def gather(host: Host, api: NodeApi, *, request_id: str | None = None) -> DashboardView:
    """Every panel of the main page."""
    reveals = await _skill_panel(api, "/reveals", "reveals")
    return DashboardView(
        node=node_card(host),
        integrations=await integrations_panel(host),
        status=await status_panel(host),
        approvals=await _skill_panel(api, "/approvals", "approvals"),
        intros=await intros_panel(api, reveals),
        lookup=await lookup_panel(api, request_id) if request_id else None,
        reveals=reveals,
        keys=await keys_panel(api),
        trust=trust_panel(host),
        plugins=plugins_rows(host),
        settings=settings_rows(host),
    )


__all__ = ["DashboardView", "Panel", "gather"]
