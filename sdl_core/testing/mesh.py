"""``InProcessMesh``: a relay and N nodes in one event loop, no sockets.

Every node host gets one :class:`MeshTransport` as its outbound transport; it routes a
request by its URL's host to the ASGI app of the relay (``relay.mesh``) or of a peer
node (``<node_id>.mesh``) through ``httpx.ASGITransport``. ASGITransport sends no
lifespan events, so the mesh starts the relay and every node explicitly (listeners
included, so posts and mailbox messages flow exactly as between real processes)::

    async with InProcessMesh(["node_a", "node_b"], plugins=[WarmIntroPlugin()]) as mesh:
        async with mesh.client("node_a") as operator:
            r = await operator.post("/darkmesh/ingest", json={...})
        host_b = mesh.nodes["node_b"]

Nodes run in ``hmac`` mode with the kit's test keys (``TEST_NODE_KEY`` for the
operator, ``TEST_PEER_KEY`` for v1 peers) and list each other as configured v1 peers;
the relay uses the ``memory`` backend and :data:`MESH_RELAY_KEY`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
from starlette.applications import Starlette

from sdl_core.host import Host, RelayHost
from sdl_core.plugins import make_plugin_manager
from sdl_core.settings import RelaySettings, load_settings
from sdl_core.testing.host import TEST_BUILTINS, TEST_NODE_KEY, make_host

__all__ = ["MESH_RELAY_KEY", "RELAY_URL", "InProcessMesh", "MeshTransport", "node_url"]

MESH_RELAY_KEY = "test-relay-key-0123456789"
RELAY_HOST = "relay.mesh"
RELAY_URL = f"http://{RELAY_HOST}"


def node_url(node_id: str) -> str:
    """The base URL a mesh node is reachable at."""
    return f"http://{node_id.lower()}.mesh"


class MeshTransport(httpx.AsyncBaseTransport):
    """Routes each request to the ASGI app registered for its URL's host."""

    def __init__(self) -> None:
        self._routes: dict[str, httpx.ASGITransport] = {}

    def add(self, host: str, app: Starlette) -> None:
        self._routes[host.lower()] = httpx.ASGITransport(app=app)

    def remove(self, host: str) -> None:
        """Take a member off the mesh (its calls then fail like a refused connection)."""
        self._routes.pop(host.lower(), None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self._routes.get(request.url.host.lower())
        if target is None:
            raise httpx.ConnectError(f"no mesh member at {request.url.host}", request=request)
        return await target.handle_async_request(request)


class InProcessMesh:
    """An async context manager: a relay (memory backend) and one node per id.

    :param node_ids: ids of the nodes to run.
    :param plugins: temporary plugin objects installed on every node (skills, fakes).
    :param node_overrides: per-node settings overrides, by node id.
    :param common_overrides: settings overrides for every node.
    :param tables: settings-file tables for plugin settings, shared by every node.
    :param builtins: core entry points each node loads (default: memory store, HTTP).
    :param listener: run each node's relay listener (default True).
    :param relay_plugins: temporary plugin objects installed on the relay.
    :param node_tables: per-node settings-file tables, by node id, merged over ``tables``
        table by table (a node's own ``[aauth]`` key and registry, say).
    :param relay_builtins: entry points the relay loads besides the memory backend
        (``{"darkmesh-aauth"}`` for a verifying relay).
    :param relay_overrides: relay settings overrides (``auth_mode``, ``key``, ...).
    :param relay_tables: settings-file tables of the relay (``{"aauth": {...}}``).
    """

    def __init__(
        self,
        node_ids: Iterable[str] = ("node_a", "node_b", "node_c"),
        *,
        plugins: Sequence[object] = (),
        node_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        common_overrides: Mapping[str, Any] | None = None,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        builtins: Iterable[str] = TEST_BUILTINS,
        listener: bool = True,
        relay_plugins: Sequence[object] = (),
        node_tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        relay_builtins: Iterable[str] = (),
        relay_overrides: Mapping[str, Any] | None = None,
        relay_tables: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.node_ids = list(node_ids)
        if len(set(self.node_ids)) != len(self.node_ids):
            raise ValueError("InProcessMesh: node ids must be unique")
        self._plugins = list(plugins)
        self._node_overrides = {k: dict(v) for k, v in (node_overrides or {}).items()}
        self._common = dict(common_overrides or {})
        self._tables = tables
        self._builtins = frozenset(builtins)
        self._listener = listener
        self._relay_plugins = list(relay_plugins)
        self._node_tables = {k: {t: dict(v) for t, v in tables_.items()}
                             for k, tables_ in (node_tables or {}).items()}
        self._relay_builtins = frozenset(relay_builtins)
        self._relay_overrides = dict(relay_overrides or {})
        self._relay_tables = {k: dict(v) for k, v in (relay_tables or {}).items()}
        self.transport = MeshTransport()
        self.relay: RelayHost | None = None
        self.relay_app: Starlette | None = None
        self.nodes: dict[str, Host] = {}
        self.apps: dict[str, Starlette] = {}

    # ----------------------------------------------------------------- building

    def _build_relay(self) -> RelayHost:
        from sdl_core.relay.app import create_relay_app

        pm = make_plugin_manager(only={"darkmesh-sdl.memory", *self._relay_builtins},
                                 plugins=self._relay_plugins, environ={})
        settings = load_settings(RelaySettings, self._relay_tables, overrides={
            "backend": "memory", "auth_mode": "hmac", "key": MESH_RELAY_KEY,
            "public_url": RELAY_URL, **self._relay_overrides,
        })
        relay = RelayHost(pm, settings, self._relay_tables)
        self.relay_app = create_relay_app(relay)
        self.transport.add(RELAY_HOST, self.relay_app)
        return relay

    def _build_node(self, node_id: str) -> Host:
        from sdl_core.node_app import create_node_app

        peers = [{"node_id": other, "url": node_url(other), "auth": "hmac"}
                 for other in self.node_ids if other != node_id]
        values: dict[str, Any] = {
            "listen_url": node_url(node_id),
            "relay_url": RELAY_URL,
            "relay_key": MESH_RELAY_KEY,
            "peers": peers,
            "listener": self._listener,
            "listener_wait_seconds": 5.0,
        }
        values.update(self._common)
        values.update(self._node_overrides.get(node_id, {}))
        tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (self._tables or {}).items()}
        for name, table in self._node_tables.get(node_id, {}).items():
            tables[name] = {**tables.get(name, {}), **table}
        host = make_host(*self._plugins, builtins=self._builtins, tables=tables,
                         transport_override=self.transport, node_id=node_id, **values)
        app = create_node_app(host)
        self.apps[node_id] = app
        self.transport.add(f"{node_id.lower()}.mesh", app)
        return host

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        try:
            self.relay = self._build_relay()
            await self.relay.start()
            for node_id in self.node_ids:
                self.nodes[node_id] = self._build_node(node_id)
            for host in self.nodes.values():
                await host.start()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        # Nodes first (their listeners hold long-polls open on the relay), then the relay.
        errors: list[BaseException] = []
        for host in reversed(list(self.nodes.values())):
            try:
                await host.stop()
            except Exception as exc:  # noqa: BLE001 - stop every node, then re-raise
                errors.append(exc)
        if self.relay is not None and self.relay.backend is not None:
            await self.relay.stop()
            self.relay = None
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ helpers

    def client(self, node_id: str, *, key: str = TEST_NODE_KEY, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for ``node_id``'s operator (node key in ``X-Darkmesh-Key``).

        ``key=""`` sends no shared key (pass ``auth=`` to sign instead).
        """
        if node_id not in self.apps:
            raise KeyError(f"no node {node_id!r} in this mesh; nodes: {', '.join(self.node_ids)}")
        headers = {"X-Darkmesh-Key": key} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.apps[node_id]),
                                 base_url=node_url(node_id), headers=headers, **kwargs)

    def relay_client(self, *, key: str = MESH_RELAY_KEY, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for the relay (relay key in ``X-Darkmesh-Key``; ``key=""``
        sends none)."""
        if self.relay_app is None:
            raise RuntimeError("the mesh is not running")
        headers = {"X-Darkmesh-Key": key} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.relay_app),
                                 base_url=RELAY_URL, headers=headers, **kwargs)

    async def wait_until(self, predicate: Any, *, timeout: float = 5.0,
                         interval: float = 0.01) -> None:
        """Poll ``predicate()`` (sync or async) until it is truthy, or fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"mesh condition not met within {timeout} s")
            await asyncio.sleep(interval)

