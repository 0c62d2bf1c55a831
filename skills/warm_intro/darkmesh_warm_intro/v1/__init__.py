"""Protocol v1 of the warm intro: template ``warm_intro_v1``, PSI ``dh-psi-v1``.

The upstream wire format exactly (``spec/wire-v1.md``), without the avoidable weaknesses
of its §10.1. :class:`V1Protocol` is what the skill mounts and calls:

* routes (relative to ``/darkmesh/skills/warm-intro``): ``POST /inbox/{request_id}``
  (``node.callback.consent``), ``POST /psi/respond`` (``node.respond``), ``POST /reveal``
  (``node.callback.reveal``);
* :meth:`V1Protocol.request` and :meth:`V1Protocol.consent` for the skill's operator
  routes; :meth:`V1Protocol.handle_post` for the listener;
* :meth:`V1Protocol.pending_approvals` / :meth:`V1Protocol.decide` when reveals wait for
  the operator (``warm_intro.v1_require_approval``).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.v1 import models
from darkmesh_warm_intro.v1.models import TEMPLATE
from darkmesh_warm_intro.v1.requester import Requester
from darkmesh_warm_intro.v1.responder import Responder
from sdl_core import Identity, RouteSpec, node_json, request_body, request_identity

log = logging.getLogger("darkmesh.warm_intro.v1")

#: A reveal body is a few hundred bytes; nothing legitimate comes near this.
REVEAL_MAX_BODY = 64 * 1024

__all__ = ["TEMPLATE", "V1Protocol"]


class V1Protocol:
    """Requester and responder of ``warm_intro_v1`` on one node."""

    template = TEMPLATE

    def __init__(self, ctx: WarmIntroContext) -> None:
        self.ctx = ctx
        self.requester = Requester(ctx)
        self.responder = Responder(ctx)

    # ------------------------------------------------------------------------ routes

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                path="/inbox/{request_id}",
                endpoint=self._inbox_route,
                methods=("POST",),
                capability="node.callback.consent",
                request_model=models.InboxBody,
                response_model=models.InboxAnswer,
                bound_field="response.responder.node_id",
                description="v1 responder delivers an answer into the collection window",
            ),
            RouteSpec(
                path="/psi/respond",
                endpoint=self._respond_route,
                methods=("POST",),
                capability="node.respond",
                request_model=models.PsiRespondBody,
                response_model=models.PsiRespondAnswer,
                bound_field="signer is this node",
                description="evaluate a warm_intro_v1 post (this node's own poller)",
            ),
            RouteSpec(
                path="/reveal",
                endpoint=self._reveal_route,
                methods=("POST",),
                capability="node.callback.reveal",
                request_model=models.RevealBody,
                response_model=models.RevealAnswer,
                bound_field="requester_id",
                max_body_bytes=REVEAL_MAX_BODY,
                description="v1 requester redeems a reveal token after its operator's consent",
            ),
        ]

    async def _inbox_route(self, request: Request) -> JSONResponse:
        body = node_json(request)
        request_id = str(request.path_params.get("request_id", ""))
        size = len(request_body(request))
        return JSONResponse(
            self.requester.deliver(request_id, body, request_identity(request), size)
        )

    async def _respond_route(self, request: Request) -> JSONResponse:
        body = node_json(request)
        return JSONResponse(await self.responder.respond(body, request_identity(request)))

    async def _reveal_route(self, request: Request) -> JSONResponse:
        body = node_json(request)
        return JSONResponse(await self.responder.reveal(body, request_identity(request)))

    # --------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Say at start-up how v1 peers will be reached (DESIGN §11 "Keys and peers")."""
        for line in self.startup_warnings():
            log.warning("darkmesh-warm-intro: %s", line)

    async def stop(self) -> None:
        """Nothing to release: pending windows end with their requests."""

    def startup_warnings(self) -> list[str]:
        host = self.ctx.host
        out: list[str] = []
        if self.ctx.settings.v1_trust_message_urls:
            out.append(
                "warm_intro.v1_trust_message_urls is on: the v1 peer key goes to any http(s) "
                "URL named in v1 posts and answers (upstream behaviour); list peers in "
                "[[node.peers]] and turn it off to stop that"
            )
        elif not host.settings.peers and not host.signing_enabled("node"):
            out.append(
                "no [[node.peers]] configured and this node does not sign: v1 answers and "
                "reveals can reach nobody; add peers, install darkmesh-aauth, or set "
                "DARKMESH_WARM_INTRO_V1_TRUST_MESSAGE_URLS=true"
            )
        return out

    # -------------------------------------------------------------------- requester

    async def request(self, body: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """§3.6: validate, publish, wait the full window, score; ``{request_id,
        candidates, privacy_cost}``. Raises :class:`sdl_core.HTTPProblem` (422/400/500/502)."""
        return await self.requester.request(body, identity)

    async def consent(self, request_id: str, consent_id: str) -> dict[str, Any]:
        """§3.7: reveal the chosen candidate (once; repeats come from the cache)."""
        return await self.requester.consent(request_id, consent_id)

    def owns_request(self, request_id: str) -> bool:
        """True for a request this protocol opened (window open or session live)."""
        return self.requester.owns(request_id)

    # -------------------------------------------------------------------- responder

    async def handle_post(self, post: dict[str, Any]) -> None:
        """Listener path for a ``warm_intro_v1`` post; never raises."""
        await self.responder.handle_post(post)

    def pending_approvals(self) -> list[dict[str, Any]]:
        """Reveals waiting for this operator (``v1_require_approval``)."""
        return self.responder.pending_approvals()

    async def decide(self, approval_id: str, approve: bool) -> dict[str, Any]:
        """Approve or decline a pending reveal; the requester's next reveal sees it."""
        return await self.responder.decide(approval_id, approve)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent reveals answered by this node (approved, declined, repeated)."""
        return self.responder.audit_log(limit)

    def status(self) -> dict[str, Any]:
        return {
            "template": TEMPLATE,
            "enabled": self.ctx.settings.v1_enabled,
            "require_approval": self.ctx.settings.v1_require_approval,
            "trust_message_urls": self.ctx.settings.v1_trust_message_urls,
            **self.requester.counts(),
            **self.responder.counts(),
        }
