"""The warm-intro skill object: routes, relay dispatch, lifecycle, status.

Routes, relative to ``/darkmesh/skills/warm-intro`` (capabilities per ``aauth.md`` §4.1):

========================================  ============  ==========================================
``POST /request``                         node.query    start and wait (v2 default; v1 by template)
``POST /v2/requests``                     node.query    start a v2 request, return at once
``GET /requests``                         node.query    recent requests (v2 and v1), newest first
``GET /requests/{request_id}``            node.query    v2 status, candidates, consents, intros
``POST /consent``                         node.consent  pick a candidate (v1 or v2 by request)
``GET /approvals``                        node.approve  reveals waiting for this operator (v2 + v1)
``POST /approvals/{approval_id}/approve``  node.approve  approve a held reveal
``POST /approvals/{approval_id}/decline``  node.approve  decline it (final)
``GET /reveals``                          node.query    the reveal audit log
``GET /keys``                             node.query    this node's v2 key fingerprint and pins
``POST /keys/{node_id}/accept``           node.approve  accept a peer's changed v2 key
========================================  ============  ==========================================

plus the v1 peer routes (``/inbox/{request_id}``, ``/psi/respond``, ``/reveal``) when
``warm_intro.v1_enabled``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from darkmesh_warm_intro import models
from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.matching import Target
from darkmesh_warm_intro.sealing import is_v2_envelope
from darkmesh_warm_intro.settings import WarmIntroSettings
from darkmesh_warm_intro.v1 import V1Protocol
from darkmesh_warm_intro.v1.models import TEMPLATE as V1_TEMPLATE
from darkmesh_warm_intro.v2 import TEMPLATE as V2_TEMPLATE
from darkmesh_warm_intro.v2 import V2Protocol
from sdl_core import HTTPProblem, Identity, MailboxMessage, RouteSpec

if TYPE_CHECKING:
    from sdl_core import Host

log = logging.getLogger("darkmesh.warm_intro")

Endpoint = Callable[[Request], Awaitable[JSONResponse]]


def _json_body(request: Request) -> dict[str, Any]:
    """The body the auth guard read, as a JSON object (422 in FastAPI's shape)."""
    raw = bytes(getattr(request.state, "body", b""))
    try:
        value = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(422, [{"type": "json_invalid", "loc": ["body"], "msg": str(exc)}]) \
            from None
    if not isinstance(value, dict):
        raise HTTPProblem(422, [{"type": "dict_type", "loc": ["body"],
                                 "msg": "request body must be a JSON object"}])
    return value


def _list_query(request: Request) -> tuple[int, str | None]:
    """``limit`` and ``state`` of ``GET /requests`` (400 ``invalid_query`` naming the fix)."""
    raw = request.query_params.get("limit")
    limit = models.LIST_DEFAULT
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) \
                or not 1 <= int(raw) <= models.LIST_MAX:
            raise HTTPProblem(400, f"limit must be an integer from 1 to {models.LIST_MAX}",
                              reason="invalid_query")
        limit = int(raw)
    state = request.query_params.get("state")
    if state is not None and state not in models.REQUEST_STATES:
        raise HTTPProblem(400, "state must be one of: " + ", ".join(models.REQUEST_STATES),
                          reason="invalid_query")
    return limit, state


def _identity(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None)
    return identity if isinstance(identity, Identity) else Identity(scheme="public")


class WarmIntroSkill:
    """Implements :class:`sdl_core.Skill` for templates ``warm_intro_v2`` and ``_v1``."""

    def __init__(self, host: Host, settings: WarmIntroSettings | None) -> None:
        self.settings = settings or WarmIntroSettings()
        self.ctx = WarmIntroContext.create(host, self.settings)
        self.v2 = V2Protocol(self.ctx)
        self.v1 = V1Protocol(self.ctx) if self.settings.v1_enabled else None

    # ------------------------------------------------------------------ Skill API

    def routes(self) -> Sequence[RouteSpec]:
        own = [
            RouteSpec(path="/request", endpoint=self._request, methods=("POST",),
                      capability="node.query", request_model=models.IntroRequest,
                      response_model=models.IntroAnswer,
                      description="find warm-intro candidates; returns when every live node "
                      "answered or the deadline passed"),
            RouteSpec(path="/v2/requests", endpoint=self._start, methods=("POST",),
                      capability="node.query", request_model=models.IntroRequest,
                      response_model=models.RequestStatus,
                      description="start a v2 request and return at once (read its status)"),
            RouteSpec(path="/requests", endpoint=self._list_requests,
                      capability="node.query", response_model=models.RequestList,
                      description="this node's recent requests (v2 and v1), newest first; "
                      f"query limit (1-{models.LIST_MAX}, default {models.LIST_DEFAULT}) "
                      "and state (collecting, complete, expired)"),
            RouteSpec(path="/requests/{request_id}", endpoint=self._status,
                      capability="node.query", response_model=models.RequestStatus,
                      description="status of a v2 request: candidates, consent states, intros"),
            RouteSpec(path="/consent", endpoint=self._consent, methods=("POST",),
                      capability="node.consent", request_model=models.ConsentRequest,
                      response_model=models.ConsentAnswer,
                      description="consent to a candidate; v2 answers 'pending' until the "
                      "responder's operator decides"),
            RouteSpec(path="/approvals", endpoint=self._approvals, capability="node.approve",
                      response_model=models.ApprovalList,
                      description="reveals of this node's contacts waiting for the operator"),
            RouteSpec(path="/approvals/{approval_id}/approve", endpoint=self._approve,
                      methods=("POST",), capability="node.approve",
                      response_model=models.DecisionAnswer, description="approve a reveal"),
            RouteSpec(path="/approvals/{approval_id}/decline", endpoint=self._decline,
                      methods=("POST",), capability="node.approve",
                      response_model=models.DecisionAnswer,
                      description="decline a reveal (final for that request)"),
            RouteSpec(path="/reveals", endpoint=self._reveals, capability="node.query",
                      response_model=models.RevealLog, description="the reveal audit log"),
            RouteSpec(path="/keys", endpoint=self._keys, capability="node.query",
                      response_model=models.KeyList,
                      description="this node's v2 key fingerprint and the pinned peer keys"),
            RouteSpec(path="/keys/{node_id}/accept", endpoint=self._accept_key,
                      methods=("POST",), capability="node.approve",
                      response_model=models.KeyAccepted,
                      description="accept a peer's changed v2 key"),
        ]
        return [*own, *(self.v1.routes() if self.v1 is not None else [])]

    def wire_models(self) -> tuple[type[BaseModel], ...]:
        """Models of what travels on the relay beyond the HTTP routes (the v2 post and
        sealed mailbox bodies); ``contracts/generate.py`` publishes their schemas."""
        from darkmesh_warm_intro.v2.messages import wire_models

        return wire_models()

    async def handle_post(self, post: dict[str, Any]) -> None:
        template = post.get("template")
        if template == V2_TEMPLATE:
            self.ctx.count_post(V2_TEMPLATE)
            await self.v2.handle_post(post)
        elif template == V1_TEMPLATE and self.v1 is not None:
            self.ctx.count_post(V1_TEMPLATE)
            await self.v1.handle_post(post)

    async def handle_mailbox(self, message: MailboxMessage) -> bool:
        if not is_v2_envelope(message.payload):
            return False
        await self.v2.handle_mailbox(message)
        return True  # ours, whether accepted or refused (refusals are logged)

    async def start(self) -> None:
        await self.v2.start()
        if self.v1 is not None:
            await self.v1.start()

    async def stop(self) -> None:
        if self.v1 is not None:
            await self.v1.stop()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default_template": self.settings.default_template,
                               "v2": self.v2.status()}
        out["v1"] = self.v1.status() if self.v1 is not None else {"enabled": False}
        return out

    # --------------------------------------------------------------------- routes

    def _template(self, body: dict[str, Any]) -> str:
        template = body.get("template")
        if template is None:  # the default is held to the same rule (v1 may be disabled)
            template = self.settings.default_template
        if template == V2_TEMPLATE or (template == V1_TEMPLATE and self.v1 is not None):
            return str(template)
        raise HTTPProblem(400, f"Template not allowed: {template}", reason="template_not_allowed")

    async def _begin(self, request: Request) -> tuple[str, dict[str, Any], Any]:
        body = _json_body(request)
        parsed = models.IntroRequest.model_validate(body)
        template = self._template(body)
        return template, body, parsed

    async def _request(self, request: Request) -> JSONResponse:
        template, body, parsed = await self._begin(request)
        if template == V1_TEMPLATE and self.v1 is not None:  # _template allowed it
            return JSONResponse(await self.v1.request(body, _identity(request)))
        started = await self.v2.requester.start(Target.from_json(body.get("target")),
                                                parsed.constraints)
        view = await self.v2.requester.wait(started["request_id"])
        view.pop("intros", None)
        view.pop("deadline", None)
        return JSONResponse(view)

    async def _start(self, request: Request) -> JSONResponse:
        template, body, parsed = await self._begin(request)
        if template != V2_TEMPLATE:
            raise HTTPProblem(400, f"Template not allowed: {template} (v2 only here)",
                              reason="template_not_allowed")
        view = await self.v2.requester.start(Target.from_json(body.get("target")),
                                             parsed.constraints)
        return JSONResponse(view, status_code=202)

    async def _list_requests(self, request: Request) -> JSONResponse:
        limit, state = _list_query(request)
        rows = self.v2.requester.summaries()
        if self.v1 is not None:
            rows.extend(self.v1.requester.summaries())
        if state is not None:
            rows = [r for r in rows if r["state"] == state]
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return JSONResponse({"requests": rows[:limit]})

    async def _status(self, request: Request) -> JSONResponse:
        return JSONResponse(self.v2.requester.view(str(request.path_params["request_id"])))

    async def _consent(self, request: Request) -> JSONResponse:
        parsed = models.ConsentRequest.model_validate(_json_body(request))
        if self.v1 is not None and self.v1.owns_request(parsed.request_id):
            return JSONResponse(await self.v1.consent(parsed.request_id, parsed.consent_id))
        return JSONResponse(await self.v2.requester.consent(parsed.request_id,
                                                            parsed.consent_id))

    async def _approvals(self, request: Request) -> JSONResponse:
        approvals = list(self.v2.responder.pending_approvals())
        if self.v1 is not None:
            approvals.extend(self.v1.pending_approvals())
        return JSONResponse({"approvals": approvals})

    async def _decide(self, request: Request, approve: bool) -> JSONResponse:
        approval_id = str(request.path_params["approval_id"])
        if self.v2.responder.owns_approval(approval_id) or self.v1 is None:
            return JSONResponse(await self.v2.responder.decide(approval_id, approve))
        return JSONResponse(await self.v1.decide(approval_id, approve))

    async def _approve(self, request: Request) -> JSONResponse:
        return await self._decide(request, True)

    async def _decline(self, request: Request) -> JSONResponse:
        return await self._decide(request, False)

    async def _reveals(self, request: Request) -> JSONResponse:
        reveals = self.v2.core.audit_log()
        if self.v1 is not None:
            reveals = [*reveals, *self.v1.audit_log()]
        return JSONResponse({"reveals": reveals})

    async def _keys(self, request: Request) -> JSONResponse:
        pins = self.v2.core.pins.listing()
        return JSONResponse({"node_id": self.ctx.node_id,
                             "fingerprint": self.v2.core.keys.fingerprint, **pins})

    async def _accept_key(self, request: Request) -> JSONResponse:
        node_id = str(request.path_params["node_id"])
        accepted = self.v2.core.pins.accept(node_id)
        if accepted is None:
            raise HTTPProblem(404, f"no pending key change for node {node_id!r}",
                              reason="no_key_change")
        return JSONResponse(accepted)

