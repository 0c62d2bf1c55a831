"""The relay HTTP app: ``create_relay_app(relay)``.

Routes are upstream's (``spec/wire-v1.md`` §4) plus DESIGN.md §11's additions:
long-poll ``wait``, ``epoch`` in every pull answer, ``live_nodes`` in the publish
answer, per-node mailboxes, a metrics route. Every route is a :class:`RouteSpec`
wrapped by :func:`sdl_core.auth.guard`, which reads the capped body and authenticates;
handlers here parse and validate fields (upstream's 400 messages, verbatim) and bind
claimed node ids to a signer (``aauth.md`` §4.2).

Numbers: ``limit`` and ``ttl_seconds`` are clamped into their upstream ranges; a value
that is not a number, or one beyond any sane range, is a 400 naming the field (upstream
answered 500). ``wait`` must lie in ``[0, max_wait_seconds]``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdl_core.auth import bind, bind_owner, guard, request_body, request_identity
from sdl_core.errors import HTTPProblem
from sdl_core.http import EXCEPTION_HANDLERS, parse_json_object
from sdl_core.logging import RequestIdMiddleware
from sdl_core.metrics import CONTENT_TYPE_LATEST
from sdl_core.protocols import NodeRecord
from sdl_core.relay import models as m
from sdl_core.specs import PUBLIC, RouteSpec

if TYPE_CHECKING:
    from sdl_core.host import RelayHost

log = logging.getLogger("darkmesh.relay")

PREFIX = "/darkmesh/relay"
#: How often the app purges expired posts, expired replay keys and stale mail.
PURGE_INTERVAL_SECONDS = 30.0
#: Larger integers than this are refused as out of range (JSON's safe integers).
MAX_SAFE_INTEGER = 2**53
#: Distinct template labels kept in metrics; further templates count as "other", so
#: hostile publishers cannot blow up the metrics' cardinality.
MAX_TEMPLATE_LABELS = 32
#: A pull refreshes the puller's liveness at most this often. ``live_nodes`` looks back
#: 60 s, so this costs no accuracy and spares the backend a write on every pull.
TOUCH_INTERVAL_SECONDS = 5.0
#: Entries kept by the touch throttle before it starts afresh (bounds its memory).
MAX_TOUCH_ENTRIES = 10_000


# ------------------------------------------------------------------ field parsing


def _problem(detail: str, reason: str = "invalid_field") -> HTTPProblem:
    return HTTPProblem(400, detail, reason=reason)


def _body(request: Request) -> dict[str, Any]:
    # The guard already parsed it for shared-key callers; signed callers reach us first.
    return parse_json_object(request_body(request))


def _trimmed(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _check_length(key: str, value: str, limit: int = m.MAX_ID_CHARS) -> str:
    if len(value) > limit:
        raise _problem(f"{key} is longer than {limit} characters", "field_too_long")
    return value


def _integer(data: dict[str, Any], key: str, default: int) -> int:
    """An integer the way upstream's ``int(...)`` reads it, but 400 instead of 500."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise _problem(f"{key} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _problem(f"{key} is out of range", "out_of_range")
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise _problem(f"{key} must be an integer") from None
    else:
        raise _problem(f"{key} must be an integer")
    if abs(number) > MAX_SAFE_INTEGER:
        raise _problem(f"{key} is out of range", "out_of_range")
    return number


def _clamped(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    return min(high, max(low, _integer(data, key, default)))


def _cursor(data: dict[str, Any]) -> int:
    cursor = _integer(data, "cursor", 0)
    if cursor < 0:
        raise _problem("cursor must be a non-negative integer", "out_of_range")
    return cursor


def _wait(data: dict[str, Any], most: float) -> float:
    value = data.get("wait")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _problem("wait must be a number of seconds")
    if not math.isfinite(value) or value < 0 or value > most:
        raise _problem(f"wait must be between 0 and {most:g} seconds", "out_of_range")
    return float(value)


def _string_list(value: Any, key: str, most: int) -> list[str]:
    """A list of at most ``most`` non-empty strings, trimmed and de-duplicated."""
    message = f"{key} must be a list of at most {most} non-empty strings"
    if not isinstance(value, list) or len(value) > most:
        raise _problem(message)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _problem(message)
        item = _check_length(key, item.strip())
        if item not in out:
            out.append(item)
    return out


def _capabilities(data: dict[str, Any], *, empty_means_default: bool) -> list[str]:
    value = data.get("capabilities")
    if value is None:
        return list(m.DEFAULT_CAPABILITIES)
    templates = _string_list(value, "capabilities", m.MAX_CAPABILITIES)
    if not templates and empty_means_default:
        return list(m.DEFAULT_CAPABILITIES)
    return templates


def _json_object(data: dict[str, Any], key: str) -> dict[str, Any]:
    # Upstream: ``body.get(key) or {}``; anything else that is not an object is refused.
    value = data.get(key)
    if not value:
        return {}
    if not isinstance(value, dict):
        raise _problem(f"{key} must be a JSON object")
    return value


def _ok(payload: dict[str, Any]) -> JSONResponse:
    # The shapes are the ``*Response`` models of :mod:`sdl_core.relay.models`; the tests
    # validate every answer against them rather than paying for it on each request.
    return JSONResponse(payload)


# -------------------------------------------------------------------------- routes


class RelayRoutes:
    """The relay's handlers, bound to one :class:`RelayHost`."""

    def __init__(self, relay: RelayHost) -> None:
        self.relay = relay
        self._template_labels: set[str] = set()
        self._touched: dict[tuple[str, frozenset[str]], float] = {}

    @property
    def backend(self) -> Any:
        return self.relay.backend

    def _template_label(self, template: str) -> str:
        if template in self._template_labels:
            return template
        if len(self._template_labels) < MAX_TEMPLATE_LABELS:
            self._template_labels.add(template)
            return template
        return "other"

    async def _touch(self, node_id: str, capabilities: list[str], now: float) -> None:
        key = (node_id, frozenset(capabilities))
        last = self._touched.get(key)
        if last is not None and now - last < TOUCH_INTERVAL_SECONDS:
            return
        if len(self._touched) >= MAX_TOUCH_ENTRIES:
            self._touched.clear()
        await self.backend.touch_node(node_id, capabilities, now)
        self._touched[key] = now

    # ---------------------------------------------------------------- handlers

    async def health(self, request: Request) -> Response:
        # Counts exclude expired posts without purging: this route is public, and a purge
        # is a write (the lifespan's purger removes them).
        now = time.time()
        nodes = await self.backend.list_nodes()
        return _ok({
            "status": "ok",
            "auth_mode": self.relay.settings.auth_mode,
            "nodes": len(nodes),
            "posts": await self.backend.count_posts(now),
            "epoch": await self.backend.epoch(),
            "backend": self.relay.settings.backend,
        })

    async def register(self, request: Request) -> Response:
        data = _body(request)
        node_id, url = _trimmed(data, "node_id"), _trimmed(data, "url").rstrip("/")
        if not node_id or not url:
            raise _problem("node_id and url are required", "missing_field")
        _check_length("node_id", node_id)
        _check_length("url", url, m.MAX_URL_CHARS)
        capabilities = _capabilities(data, empty_means_default=False)
        aliases_value = data.get("aliases")
        aliases = (
            [] if aliases_value is None
            else _string_list(aliases_value, "aliases", m.MAX_ALIASES)
        )
        bind(request_identity(request), node_id, "node_id")
        for alias in aliases:
            # A pseudonym held by another node (or another node's id) must not be taken
            # over, or its mail would be diverted. The answer says only "taken", never by
            # whom. Two nodes racing for one fresh random alias is not a real case.
            owner = await self.backend.resolve_recipient(alias)
            if owner is not None and owner != node_id:
                raise HTTPProblem(409, f"alias '{alias}' is already registered",
                                  reason="alias_taken")
        record = NodeRecord(node_id=node_id, url=url, capabilities=tuple(capabilities),
                            last_seen=time.time())
        stored = await self.backend.register_node(record, aliases)
        return _ok({"ok": True, "node": stored.to_json()})

    async def nodes(self, request: Request) -> Response:
        records = await self.backend.list_nodes()
        return _ok({"nodes": [r.to_json() for r in records]})

    async def publish(self, request: Request) -> Response:
        settings = self.relay.settings
        data = _body(request)
        request_id = _trimmed(data, "request_id")
        requester_id = _trimmed(data, "requester_id")
        requester_url = _trimmed(data, "requester_url").rstrip("/")
        template = _trimmed(data, "template")
        token = data.get("response_token")
        response_token = token if isinstance(token, str) and token else ""
        if template == m.V1_TEMPLATE or not template:
            if not (request_id and requester_id and requester_url and template):
                raise _problem(
                    "request_id, requester_id, requester_url, and template are required",
                    "missing_field",
                )
            if not response_token:
                raise _problem("response_token is required", "missing_field")
        elif not (request_id and requester_id):
            raise _problem("request_id, requester_id, and template are required",
                           "missing_field")
        for key, value in (("request_id", request_id), ("requester_id", requester_id),
                           ("template", template), ("response_token", response_token)):
            _check_length(key, value)
        _check_length("requester_url", requester_url, m.MAX_URL_CHARS)
        ttl = _clamped(data, "ttl_seconds", m.TTL_DEFAULT, m.TTL_MIN, m.TTL_MAX)
        target = _json_object(data, "target")
        psi = _json_object(data, "psi")
        constraints = _json_object(data, "constraints")
        bind(request_identity(request), requester_id, "requester_id")

        now = time.time()
        post: dict[str, Any] = {"request_id": request_id, "requester_id": requester_id}
        if requester_url:
            post["requester_url"] = requester_url
        post.update({"template": template, "target": target, "psi": psi,
                     "constraints": constraints})
        if response_token:
            post["response_token"] = response_token
        post["created_at"] = now
        expires_at = now + ttl
        size = len(json.dumps(post, separators=(",", ":")).encode("utf-8"))
        if size > settings.max_message_bytes:
            raise HTTPProblem(413, f"post exceeds {settings.max_message_bytes} bytes",
                              reason="message_too_large")
        stored = await self.backend.publish(post, expires_at)
        live = await self.backend.live_nodes(
            template, now - settings.live_window_seconds, requester_id
        )
        self.relay.metrics.relay_posts.labels(template=self._template_label(template)).inc()
        return _ok({
            "ok": True, "post_id": stored["post_id"], "seq": stored["seq"],
            "expires_at": stored["expires_at"], "live_nodes": live,
        })

    async def pull(self, request: Request) -> Response:
        data = _body(request)
        node_id = _trimmed(data, "node_id")
        if not node_id:
            raise _problem("node_id is required", "missing_field")
        _check_length("node_id", node_id)
        capabilities = _capabilities(data, empty_means_default=True)
        cursor = _cursor(data)
        limit = _clamped(data, "limit", m.PULL_LIMIT_DEFAULT, m.PULL_LIMIT_MIN, m.PULL_LIMIT_MAX)
        wait = _wait(data, self.relay.settings.max_wait_seconds)
        bind(request_identity(request), node_id, "node_id")
        now = time.time()
        await self._touch(node_id, capabilities, now)
        result = await self.backend.pull(node_id, capabilities, cursor, limit, wait, now)
        return _ok({
            "node_id": node_id, "cursor": result.cursor, "posts": result.posts,
            "epoch": result.epoch,
        })

    async def mailbox_send(self, request: Request) -> Response:
        settings = self.relay.settings
        identity = request_identity(request)
        data = _body(request)
        to = _trimmed(data, "to")
        request_id = _trimmed(data, "request_id")
        payload = data.get("payload")
        if not to or not request_id or not isinstance(payload, str) or not payload:
            raise _problem("to, request_id and payload are required", "missing_field")
        _check_length("to", to)
        _check_length("request_id", request_id)
        if identity.scheme == "aauth":
            if not identity.node_id:
                raise HTTPProblem(
                    403, f"AAuth sub '{identity.sub}' is not a node and cannot send mail",
                    reason="identity_mismatch",
                )
            sender, verified = identity.node_id, True
        else:
            sender, verified = _trimmed(data, "from"), False
            if not sender:
                raise _problem("from is required", "missing_field")
            _check_length("from", sender)
        most = settings.max_message_bytes
        # base64 grows 4/3; refuse before decoding anything far too big.
        if len(payload) > 4 * (most // 3 + 1):
            raise HTTPProblem(413, f"payload exceeds {most} bytes", reason="message_too_large")
        try:
            decoded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _problem("payload must be standard base64") from None
        if len(decoded) > most:
            raise HTTPProblem(413, f"payload exceeds {most} bytes", reason="message_too_large")
        recipient = await self.backend.resolve_recipient(to)
        if recipient is None:
            raise HTTPProblem(404, f"recipient '{to}' is not registered",
                              reason="unknown_recipient")
        message = await self.backend.mailbox_send(
            recipient, sender, verified, request_id, payload, time.time()
        )
        self.relay.metrics.mailbox_messages.labels(direction="sent").inc()
        return _ok({"ok": True, "id": message.id, "created_at": message.created_at})

    def _owner(self, request: Request, data: dict[str, Any]) -> str:
        node_id = _trimmed(data, "node_id")
        if not node_id:
            raise _problem("node_id is required", "missing_field")
        _check_length("node_id", node_id)
        bind_owner(request_identity(request), node_id)
        return node_id

    async def mailbox_pull(self, request: Request) -> Response:
        data = _body(request)
        limit = _clamped(data, "limit", m.MAILBOX_LIMIT_DEFAULT, m.MAILBOX_LIMIT_MIN,
                         m.MAILBOX_LIMIT_MAX)
        wait = _wait(data, self.relay.settings.max_wait_seconds)
        node_id = self._owner(request, data)
        messages = await self.backend.mailbox_pull(node_id, limit, wait)
        if messages:
            self.relay.metrics.mailbox_messages.labels(direction="delivered").inc(len(messages))
        return _ok({"node_id": node_id, "messages": [msg.to_json() for msg in messages]})

    async def mailbox_ack(self, request: Request) -> Response:
        data = _body(request)
        ids = data.get("ids")
        message = f"ids must be a list of at most {m.MAX_ACK_IDS} message ids"
        if (not isinstance(ids, list) or len(ids) > m.MAX_ACK_IDS
                or not all(isinstance(i, str) and 0 < len(i) <= m.MAX_ID_CHARS for i in ids)):
            raise _problem(message)
        node_id = self._owner(request, data)
        acked = await self.backend.mailbox_ack(node_id, ids)
        return _ok({"ok": True, "acked": acked})

    async def metrics(self, request: Request) -> Response:
        return Response(self.relay.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ specs

    def specs(self) -> list[RouteSpec]:
        """Every relay route with its capability (also feeds ``contracts/routes.json``)."""
        return [
            RouteSpec(path=f"{PREFIX}/health", endpoint=self.health, methods=("GET",),
                      capability=PUBLIC, name="relay.health",
                      response_model=m.HealthResponse),
            RouteSpec(path=f"{PREFIX}/nodes/register", endpoint=self.register,
                      methods=("POST",), capability="relay.register", name="relay.register",
                      request_model=m.RegisterRequest, response_model=m.RegisterResponse,
                      bound_field="node_id"),
            RouteSpec(path=f"{PREFIX}/nodes", endpoint=self.nodes, methods=("GET",),
                      capability="relay.list", name="relay.nodes",
                      response_model=m.NodesResponse),
            RouteSpec(path=f"{PREFIX}/posts", endpoint=self.publish, methods=("POST",),
                      capability="relay.publish", name="relay.publish",
                      request_model=m.PublishRequest, response_model=m.PublishResponse,
                      bound_field="requester_id"),
            RouteSpec(path=f"{PREFIX}/posts/pull", endpoint=self.pull, methods=("POST",),
                      capability="relay.pull", name="relay.pull",
                      request_model=m.PullRequest, response_model=m.PullResponse,
                      bound_field="node_id"),
            RouteSpec(path=f"{PREFIX}/mailbox/send", endpoint=self.mailbox_send,
                      methods=("POST",), capability="relay.mailbox.send",
                      name="relay.mailbox.send", request_model=m.MailboxSendRequest,
                      response_model=m.MailboxSendResponse, bound_field="from"),
            RouteSpec(path=f"{PREFIX}/mailbox/pull", endpoint=self.mailbox_pull,
                      methods=("POST",), capability="relay.mailbox.read",
                      name="relay.mailbox.pull", request_model=m.MailboxPullRequest,
                      response_model=m.MailboxPullResponse, bound_field="node_id"),
            RouteSpec(path=f"{PREFIX}/mailbox/ack", endpoint=self.mailbox_ack,
                      methods=("POST",), capability="relay.mailbox.read",
                      name="relay.mailbox.ack", request_model=m.MailboxAckRequest,
                      response_model=m.MailboxAckResponse, bound_field="node_id"),
            RouteSpec(path=f"{PREFIX}/metrics", endpoint=self.metrics, methods=("GET",),
                      capability="relay.list", name="relay.metrics"),
        ]


def relay_route_specs(relay: RelayHost) -> list[RouteSpec]:
    """The relay's route table, for ``contracts/`` and ``darkmesh`` listings."""
    return RelayRoutes(relay).specs()


async def _purge_forever(relay: RelayHost) -> None:
    while True:
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
        try:
            await relay.backend.purge_expired(time.time())
        except Exception:  # a failing purge must not end the loop
            log.exception("relay purge failed")


def create_relay_app(relay: RelayHost) -> Starlette:
    """The relay's Starlette app. Its lifespan starts and stops ``relay``.

    In-process tests (``httpx.ASGITransport`` sends no lifespan events) call
    ``await relay.start()`` themselves before the first request.
    """
    handlers = RelayRoutes(relay)
    limit = relay.settings.max_body_bytes
    routes = [
        Route(spec.path, guard(relay, spec, max_body_bytes=limit), methods=list(spec.methods),
              name=spec.name)
        for spec in handlers.specs()
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await relay.start()
        purger = asyncio.create_task(_purge_forever(relay), name="relay-purge")
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            await relay.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RequestIdMiddleware)],
    )
    app.state.relay = relay
    return app


__all__: Sequence[str] = ["RelayRoutes", "create_relay_app", "relay_route_specs"]
