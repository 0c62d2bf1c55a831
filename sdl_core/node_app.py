"""The node's Starlette app: core routes, skill routes, signer/verifier routes.

Every route is a :class:`sdl_core.RouteSpec` that declares its capability and is
wrapped by :func:`sdl_core.auth.guard` (capped body, auth per mode, capability check,
JSON errors). ``create_node_app`` prepares the host synchronously — skills are built
then, so their routes can be mounted — and the lifespan awaits ``host.start()`` and
``host.stop()``. In-process tests that use ``httpx.ASGITransport`` (which sends no
lifespan events) call ``await host.start()`` themselves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdl_core import node_models as m
from sdl_core.auth import guard, node_json
from sdl_core.catalog import all_spec_names, plugin_listing
from sdl_core.dashboard import DashboardAccess, dashboard_routes
from sdl_core.errors import HTTPProblem, StartupError
from sdl_core.http import EXCEPTION_HANDLERS
from sdl_core.logging import RequestIdMiddleware
from sdl_core.metrics import CONTENT_TYPE_LATEST
from sdl_core.records import clamp01, parse_strength
from sdl_core.specs import OPERATOR_SESSION, PUBLIC, RouteSpec

if TYPE_CHECKING:
    from sdl_core.host import Host

SKILL_PREFIX = "/darkmesh/skills"


@dataclass(frozen=True, kw_only=True)
class MountedRoute:
    """A route as served: its absolute path, its spec, and who declared it."""

    path: str
    spec: RouteSpec
    owner: str  # "darkmesh-sdl", "skill:<name>", "signer" or "verifier"


# ------------------------------------------------------------------- core routes


def core_routes(host: Host) -> list[RouteSpec]:
    """The node's own routes (``wire-v1.md`` §3.1–3.5, plugins, metrics)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "node_id": host.settings.node_id})

    async def capabilities(request: Request) -> Response:
        return JSONResponse({"node_id": host.settings.node_id, "capabilities": host.templates()})

    async def node_card(request: Request) -> Response:
        s = host.settings
        return JSONResponse({
            "node_id": s.node_id,
            "pseudonym_id": s.pseudonym_id or s.node_id,
            "url": s.listen_url,
            "capabilities": host.templates(),
            "relay_url": s.relay_url,
        })

    async def integrations_status(request: Request) -> Response:
        entries = []
        for name in host.settings.required_integrations:
            records = await host.store.count(name)
            entries.append({"name": name, "records": records, "ready": records > 0})
        return JSONResponse({
            "node_id": host.settings.node_id,
            "ready": all(e["ready"] for e in entries),
            "required_integrations": entries,
            "plugins": await host.plugin_status(),
        })

    async def ingest(request: Request) -> Response:
        body = node_json(request)
        # Count before validating each record, so a huge batch is refused cheaply.
        records = body.get("records")
        limit = host.settings.ingest_max_records
        if isinstance(records, list) and len(records) > limit:
            raise HTTPProblem(
                413, f"too many records: {len(records)} > {limit} (DARKMESH_INGEST_MAX_RECORDS);"
                " split the batch", reason="too_many_records",
            )
        payload = m.IngestRequest.model_validate(body)
        declared = host.datasets()
        if payload.dataset not in declared:
            raise HTTPProblem(
                400, f"unknown dataset {payload.dataset!r}: no installed skill declares it; "
                f"choose one of: {', '.join(sorted(declared))}", reason="unknown_dataset",
            )
        cleaned = [_clamp_strength(record) for record in payload.records]
        started = time.perf_counter()
        try:
            count = await host.store.upsert(payload.dataset, cleaned)
        except ValueError as exc:  # a store refusing a record it cannot hold
            raise HTTPProblem(422, f"records refused: {exc}", reason="invalid_records") from None
        host.metrics.store_latency.labels(store=host.settings.store, operation="upsert").observe(
            time.perf_counter() - started
        )
        return JSONResponse({"dataset": payload.dataset, "count": count})

    async def plugins(request: Request) -> Response:
        return JSONResponse({
            "node_id": host.settings.node_id,
            "plugins": plugin_listing(host.pm),
            "specs": all_spec_names(host.pm),
        })

    async def metrics(request: Request) -> Response:
        return Response(host.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        RouteSpec(path="/darkmesh/health", endpoint=health, capability=PUBLIC, name="health",
                  response_model=m.HealthResponse),
        RouteSpec(path="/darkmesh/capabilities", endpoint=capabilities, capability="node.query",
                  name="capabilities", response_model=m.CapabilitiesResponse),
        RouteSpec(path="/darkmesh/node/card", endpoint=node_card, capability="node.query",
                  name="node_card", response_model=m.NodeCard),
        RouteSpec(path="/darkmesh/integrations/status", endpoint=integrations_status,
                  capability="node.query", name="integrations_status",
                  response_model=m.IntegrationsStatusResponse),
        RouteSpec(path="/darkmesh/ingest", endpoint=ingest, methods=("POST",),
                  capability="node.ingest", name="ingest", request_model=m.IngestRequest,
                  response_model=m.IngestResponse),
        RouteSpec(path="/darkmesh/plugins", endpoint=plugins, capability="node.query",
                  name="plugins", response_model=m.PluginsResponse),
        RouteSpec(path="/darkmesh/metrics", endpoint=metrics, capability="node.query",
                  name="metrics", description="Prometheus text format"),
    ]


def _clamp_strength(record: dict[str, Any]) -> dict[str, Any]:
    """``wire-v1.md`` §10.1 item 4: strengths outside [0, 1] never enter a store."""
    if record.get("strength") is None:
        return record
    return {**record, "strength": clamp01(parse_strength(record["strength"]))}


# ------------------------------------------------------------------ route table


def _check_route(host: Host, owner: str, path: str, spec: RouteSpec) -> None:
    capability = getattr(spec, "capability", None)
    if not capability or not isinstance(capability, str):
        raise StartupError(
            f"{owner}: route {path} declares no capability; every route must declare one "
            f"(a capability name, {PUBLIC!r} or {OPERATOR_SESSION!r})"
        )
    known = host.capability_names() | {PUBLIC, OPERATOR_SESSION}
    if capability not in known:
        raise StartupError(
            f"{owner}: route {path} declares unknown capability {capability!r}; declare it "
            "in SkillSpec.capabilities or through darkmesh_register_capabilities"
        )


def _skill_path(skill_name: str, path: str) -> str:
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{SKILL_PREFIX}/{skill_name}{path}"


def route_table(host: Host, *, dashboard: DashboardAccess | None = None) -> list[MountedRoute]:
    """Every route the node serves, checked: core, dashboard, skills, then signer/verifier
    routes. ``dashboard`` holds the dashboard's login secret and sessions (a fresh one
    when not given).

    :raises StartupError: naming the skill (or piece) and path of a route without a
        valid capability, or a path served twice.
    """
    host.prepare()
    table = [MountedRoute(path=spec.path, spec=spec, owner="darkmesh-sdl")
             for spec in core_routes(host)]
    access = dashboard or DashboardAccess.for_settings(host.settings)
    table.extend(MountedRoute(path=spec.path, spec=spec, owner="darkmesh-sdl")
                 for spec in dashboard_routes(host, access))
    for name, skill in host.skills.items():
        for spec in skill.routes():
            table.append(MountedRoute(path=_skill_path(name, spec.path), spec=spec,
                                      owner=f"skill:{name}"))
    for owner, piece in (("signer", host.signer), ("verifier", host.verifier)):
        routes = getattr(piece, "routes", None)
        if piece is not None and callable(routes):
            table.extend(MountedRoute(path=spec.path, spec=spec, owner=owner)
                         for spec in routes())
    seen: dict[tuple[str, str], str] = {}
    for mounted in table:
        _check_route(host, mounted.owner, mounted.path, mounted.spec)
        for method in mounted.spec.methods:
            key = (method.upper(), mounted.path)
            if key in seen:
                raise StartupError(
                    f"{mounted.owner}: route {method} {mounted.path} is already served by "
                    f"{seen[key]}"
                )
            seen[key] = mounted.owner
    return table


def create_node_app(host: Host, *, middleware: Sequence[Middleware] = ()) -> Starlette:
    """The node's ASGI app. Prepares ``host`` now; its lifespan starts and stops it.

    ``app.state.dashboard`` is the dashboard's :class:`~sdl_core.dashboard.DashboardAccess`
    (``darkmesh node serve`` prints its login URL).
    """
    dashboard = DashboardAccess.for_settings(host.settings)
    table = route_table(host, dashboard=dashboard)
    routes = [
        Route(
            mounted.path,
            guard(host, mounted.spec, max_body_bytes=host.settings.max_body_bytes),
            methods=list(mounted.spec.methods),
            name=mounted.spec.name if mounted.owner == "darkmesh-sdl" else None,
        )
        for mounted in table
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await host.start()
        try:
            yield
        finally:
            await host.stop()

    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RequestIdMiddleware), *middleware],
        lifespan=lifespan,
    )
    app.state.host = host
    app.state.route_table = table
    app.state.dashboard = dashboard
    return app


__all__ = ["MountedRoute", "core_routes", "create_node_app", "route_table"]
