"""The dashboard's routes under ``/darkmesh/ui`` (capability ``operator-session``).

The core guard passes ``operator-session`` routes through (capped body, JSON errors);
every handler here checks the client rule and the session itself, and every POST the
CSRF token. Pages are server-rendered Jinja2 (autoescaped), read fine without
JavaScript and contain none; state changes are plain HTML forms answered with
``303 See Other`` back to the page (post/redirect/get), their outcome shown once as a
notice. Refusals of the access rules are JSON ``{"detail": ...}`` with 401/403, like
every other route of the node.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sdl_core.dashboard.node_api import WARM_INTRO, NodeApi, NodeApiError
from sdl_core.dashboard.panels import gather
from sdl_core.dashboard.sessions import (
    COOKIE_NAME,
    CSRF_FIELD,
    UI_PREFIX,
    DashboardAccess,
    OperatorSession,
)
from sdl_core.dashboard.trust import TrustError, TrustPanel
from sdl_core.errors import HTTPProblem
from sdl_core.specs import OPERATOR_SESSION, RouteSpec

if TYPE_CHECKING:
    from sdl_core.host import Host

#: Largest form a dashboard POST may carry (a pasted JWK is well under this).
MAX_FORM_BYTES = 64 * 1024
MAX_FIELD_CHARS = 16 * 1024
#: Ids the dashboard puts into skill paths: no separators, no dots, bounded.
PATH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
THUMBPRINT = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

#: No scripts at all; inline styles only; forms post back here only; never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request], Awaitable[Response]]


def _timestamp(value: Any) -> str:
    """Epoch seconds as UTC ISO-8601; strings (already ISO) pass through."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("sdl_core.dashboard", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        # Skill answers may lack optional fields: a missing one renders empty, never a 500.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["timestamp"] = _timestamp
    return env


class Dashboard:
    """Handlers of one node's dashboard."""

    def __init__(self, host: Host, access: DashboardAccess) -> None:
        self.host = host
        self.access = access
        self.env = make_environment()

    # --------------------------------------------------------------- helpers

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        page = self.env.get_template(template).render(
            prefix=UI_PREFIX, csrf_field=CSRF_FIELD, node_id=self.host.settings.node_id,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    def back(self, anchor: str = "") -> RedirectResponse:
        target = f"{UI_PREFIX}#{anchor}" if anchor else UI_PREFIX
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    def require_session(self, request: Request) -> OperatorSession:
        self.access.check_client(request)
        session = self.access.session_of(request)
        if session is None:
            raise HTTPProblem(401, f"log in to the dashboard first ({UI_PREFIX}/login)",
                              reason="dashboard_login_required")
        return session

    async def form(self, request: Request) -> FormData:
        """The posted form (urlencoded or multipart without files), fields bounded."""
        try:
            form = await request.form(max_files=0, max_fields=32, max_part_size=MAX_FORM_BYTES)
        except Exception as exc:  # noqa: BLE001 - python-multipart: malformed input, not ours
            raise HTTPProblem(400, f"malformed form: {type(exc).__name__}",
                              reason="malformed_form") from None
        for value in form.values():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise HTTPProblem(413, f"a form field is longer than {MAX_FIELD_CHARS} "
                                  "characters", reason="field_too_long")
        return form

    async def posted(self, request: Request) -> tuple[OperatorSession, FormData]:
        """Session, client rule and CSRF token of a state-changing request."""
        session = self.require_session(request)
        form = await self.form(request)
        self.access.check_csrf(session, form)
        return session, form

    def api(self, request: Request) -> NodeApi:
        return NodeApi(self.host, request.app)

    @staticmethod
    def text(form: FormData, name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    # ----------------------------------------------------------------- pages

    async def index(self, request: Request) -> Response:
        self.access.check_client(request)
        session = self.access.session_of(request)
        if session is None:
            return RedirectResponse(f"{UI_PREFIX}/login", status_code=303,
                                    headers=SECURITY_HEADERS)
        notices = session.take_notices()
        request_id = request.query_params.get("request_id", "").strip() or None
        if request_id is not None and not PATH_ID.match(request_id):
            notices.append(("error", "a request id is 1-64 letters, digits, '_' or '-'"))
            request_id = None
        view = await gather(self.host, self.api(request), request_id=request_id)
        view.notices = notices
        return self.render("index.html", view=view, csrf_token=session.csrf_token,
                           request_id=request_id or "",
                           capabilities=sorted(self.host.capability_names()))

    async def login_page(self, request: Request) -> Response:
        self.access.check_client(request)
        token = request.query_params.get("token")
        if token is not None:
            if not self.access.try_login(request, token):
                return self.render("login.html", status=401, error="that login link is not "
                                   "valid for this run of the node")
            # A page that moves on by itself: a Strict cookie set during a cross-site
            # navigation (a link clicked elsewhere) is sent on the next same-site one.
            return self._logged_in(request, self.render("logged_in.html"))
        if self.access.session_of(request) is not None:
            return self.back()
        return self.render("login.html", error="")

    async def login(self, request: Request) -> Response:
        self.access.check_client(request)
        form = await self.form(request)
        if not self.access.try_login(request, self.text(form, "secret")):
            return self.render("login.html", status=401, error="wrong session secret")
        return self._logged_in(request, self.back())

    def _logged_in(self, request: Request, response: Response) -> Response:
        session = self.access.open_session()
        response.set_cookie(**self.access.cookie_arguments(request, session))
        return response

    async def logout(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        self.access.close_session(session)
        response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303,
                                    headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE_NAME, path=UI_PREFIX)
        return response

    # ------------------------------------------------------------- decisions

    async def _decide(self, request: Request, decision: str) -> Response:
        session, _ = await self.posted(request)
        approval_id = str(request.path_params["approval_id"])
        if not PATH_ID.match(approval_id):
            raise HTTPProblem(400, "approval_id: 1-64 letters, digits, '_' or '-'",
                              reason="invalid_approval_id")
        try:
            answer = await self.api(request).skill(
                WARM_INTRO, "POST", f"/approvals/{approval_id}/{decision}")
            session.notify("ok", f"approval {approval_id}: {answer.get('state', decision)}")
        except NodeApiError as exc:
            session.notify("error", f"approval {approval_id} not {decision}d: {exc}")
        return self.back("approvals")

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, "approve")

    async def decline(self, request: Request) -> Response:
        return await self._decide(request, "decline")

    async def accept_key(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        node_id = str(request.path_params["node_id"])
        if not NODE_ID.match(node_id):
            raise HTTPProblem(400, "node_id: 1-64 letters, digits, '_', '.', '-'",
                              reason="invalid_node_id")
        try:
            answer = await self.api(request).skill(WARM_INTRO, "POST",
                                                   f"/keys/{node_id}/accept")
            session.notify("ok", f"accepted the new key of {node_id}: "
                           f"{answer.get('fingerprint', '')}")
        except NodeApiError as exc:
            session.notify("error", f"key of {node_id} not accepted: {exc}")
        return self.back("keys")

    # ----------------------------------------------------------------- trust

    def trust_panel(self) -> TrustPanel:
        panel = TrustPanel(self.host)
        reason = panel.unavailable_reason()
        if reason is not None:
            raise HTTPProblem(409, reason, reason="trust_unavailable")
        return panel

    async def trust_add(self, request: Request) -> Response:
        session, form = await self.posted(request)
        panel = self.trust_panel()
        url, pasted = self.text(form, "url"), self.text(form, "public_jwk")
        sub, label = self.text(form, "sub"), self.text(form, "label") or None
        iss = self.text(form, "iss") or None
        confirmed = self.text(form, "expect_thumbprint")
        try:
            if bool(url) == bool(pasted):
                raise TrustError("give either a public JWK or a node URL, not both")
            capabilities = panel.capabilities(self.text(form, "capabilities"))
            if pasted:
                result = await panel.add(public=panel.parse_public_jwk(pasted), sub=sub,
                                         iss=iss, capabilities=capabilities, label=label)
            elif not confirmed:
                preview = await panel.preview_url(url, sub)
                return self.render("trust_confirm.html", preview=preview, iss=iss or "",
                                   label=label or "", capabilities=",".join(capabilities),
                                   csrf_token=session.csrf_token)
            else:
                if not THUMBPRINT.match(confirmed):
                    raise TrustError("expect_thumbprint is not a key thumbprint")
                result = await panel.add_from_url(url=url, expect_thumbprint=confirmed,
                                                  sub=sub, iss=iss, capabilities=capabilities,
                                                  label=label)
        except TrustError as exc:
            session.notify("error", f"trust registry unchanged: {exc}")
            return self.back("trust")
        session.notify("ok", f"trust registry: {result['action']} {result['thumbprint']} "
                       f"({result['sub']}); {result['total_entries']} entries")
        return self.back("trust")

    async def trust_remove(self, request: Request) -> Response:
        session, form = await self.posted(request)
        panel = self.trust_panel()
        thumbprint = self.text(form, "thumbprint")
        try:
            if not THUMBPRINT.match(thumbprint):
                raise TrustError("thumbprint is not a key thumbprint")
            result = await panel.remove(thumbprint)
        except TrustError as exc:
            session.notify("error", f"trust registry unchanged: {exc}")
            return self.back("trust")
        session.notify("ok", f"revoked {thumbprint}; {result['total_entries']} entries left")
        return self.back("trust")


def dashboard_routes(host: Host, access: DashboardAccess) -> list[RouteSpec]:
    """The ``/darkmesh/ui`` routes, each declaring ``operator-session``."""
    ui = Dashboard(host, access)

    def route(path: str, endpoint: Handler, name: str, method: str = "GET",
              description: str = "") -> RouteSpec:
        return RouteSpec(path=f"{UI_PREFIX}{path}", endpoint=endpoint, methods=(method,),
                         capability=OPERATOR_SESSION, name=name,
                         max_body_bytes=MAX_FORM_BYTES, description=description)

    return [
        route("", ui.index, "ui", description="the dashboard (HTML)"),
        route("/login", ui.login_page, "ui_login_page",
              description="login form; ?token=<session secret> logs in"),
        route("/login", ui.login, "ui_login", "POST", "log in with the session secret"),
        route("/logout", ui.logout, "ui_logout", "POST", "end the session"),
        route("/approvals/{approval_id}/approve", ui.approve, "ui_approve", "POST",
              "approve a held reveal (the skill's route, as the operator)"),
        route("/approvals/{approval_id}/decline", ui.decline, "ui_decline", "POST",
              "decline a held reveal"),
        route("/keys/{node_id}/accept", ui.accept_key, "ui_accept_key", "POST",
              "accept a peer's changed v2 key"),
        route("/trust/add", ui.trust_add, "ui_trust_add", "POST",
              "trust a key: pasted public JWK, or a node URL (confirm its thumbprint)"),
        route("/trust/remove", ui.trust_remove, "ui_trust_remove", "POST",
              "revoke a key by thumbprint"),
    ]


__all__ = ["Dashboard", "dashboard_routes", "make_environment"]
