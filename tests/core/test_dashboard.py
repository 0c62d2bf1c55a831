"""The dashboard in-process: access rules, login, CSRF, panels, redaction, escaping.

A stand-in ``warm-intro`` skill serves the documented routes the dashboard uses
(``/approvals``, ``/approvals/{id}/approve|decline``, ``/reveals``, ``/keys``,
``/requests/{id}``), so these tests need no plugin; the real skill is driven by
``tests/e2e/test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse

from sdl_core import DarkmeshSettings, HTTPProblem, RouteSpec, SkillSpec, hookimpl
from sdl_core.dashboard import DashboardAccess
from sdl_core.dashboard.sessions import COOKIE_NAME, MAX_FAILED_LOGINS, LoginThrottle
from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, make_host, running_node_app

UI = "/darkmesh/ui"
HOSTILE = '<script>alert("x")</script>'
SKILL_SECRET = "skill-secret-value-do-not-show"


class FakeSkillSettings(DarkmeshSettings):
    section: ClassVar[str] = "warm_intro"
    api_token: SecretStr = Field(default=SecretStr(SKILL_SECRET), description="a secret")
    label: str = Field(default="visible-setting", description="a plain value")


class FakeWarmIntro:
    """The warm-intro routes the dashboard reads, over an in-memory state."""

    def __init__(self, host: Any, settings: Any) -> None:
        self.decisions: list[tuple[str, str]] = []
        self.approvals: dict[str, dict[str, Any]] = {
            "ap1": {"approval_id": "ap1", "template": "warm_intro_v2", "request_id": "rq1",
                    "requester_node_id": "node_a", "requester_key_fingerprint": "ab" * 16,
                    "target": {"company": "Company X", "role": "BD"},
                    "contact": {"name": HOSTILE, "org": "Company X", "role": "BD",
                                "email": "taylor@companyx.com"},
                    "created_at": 1_700_000_000.0, "state": "pending"},
        }
        self.reveals: list[dict[str, Any]] = []

    async def list_approvals(self, request: Request) -> JSONResponse:
        return JSONResponse({"approvals": [a for a in self.approvals.values()
                                           if a["state"] == "pending"]})

    async def decide(self, request: Request) -> JSONResponse:
        approval_id = request.path_params["approval_id"]
        decision = request.url.path.rsplit("/", 1)[-1]
        approval = self.approvals.get(approval_id)
        if approval is None:
            raise HTTPProblem(404, "approval_id not found or expired", reason="unknown_approval")
        approval["state"] = "approved" if decision == "approve" else "declined"
        self.decisions.append((approval_id, decision))
        if decision == "approve":
            self.reveals.append({"side": "responder", "request_id": approval["request_id"],
                                 "requester_node_id": "node_a", "responder_node_id": "node_b",
                                 "target": approval["target"],
                                 "contact": {"name": HOSTILE, "org": "Company X", "role": "BD"},
                                 "relationship_strength": 0.88,
                                 "revealed_at": "2024-01-01T00:00:00Z"})
        return JSONResponse({"approval_id": approval_id, "state": approval["state"],
                             "approved": decision == "approve"})

    async def list_reveals(self, request: Request) -> JSONResponse:
        return JSONResponse({"reveals": self.reveals})

    async def keys(self, request: Request) -> JSONResponse:
        return JSONResponse({"node_id": "node_b", "fingerprint": "f1" * 16, "pinned": [],
                             "pending_changes": []})

    async def status_of(self, request: Request) -> JSONResponse:
        request_id = request.path_params["request_id"]
        if request_id != "rq1":
            raise HTTPProblem(404, f"unknown request_id {request_id}", reason="unknown_request")
        return JSONResponse({"request_id": "rq1", "template": "warm_intro_v2",
                             "state": "complete", "privacy_cost": 0.1, "answered": 2,
                             "live_nodes": 2, "refused": 0,
                             "candidates": [{"pseudonym_id": "p-1", "score": 0.904,
                                             "requires_consent": True, "consent_id": "c1",
                                             "state": "revealed"}],
                             "intros": {"c1": {"connector": {"node_id": "node_b"},
                                               "target_contact": {"name": "Taylor BD"},
                                               "relationship_strength": 0.88,
                                               "next_step": "ask"}}})

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(path="/approvals", endpoint=self.list_approvals, capability="node.approve"),
            RouteSpec(path="/approvals/{approval_id}/approve", endpoint=self.decide,
                      methods=("POST",), capability="node.approve"),
            RouteSpec(path="/approvals/{approval_id}/decline", endpoint=self.decide,
                      methods=("POST",), capability="node.approve"),
            RouteSpec(path="/reveals", endpoint=self.list_reveals, capability="node.query"),
            RouteSpec(path="/keys", endpoint=self.keys, capability="node.query"),
            RouteSpec(path="/requests/{request_id}", endpoint=self.status_of,
                      capability="node.query"),
        ]

    async def handle_post(self, post: dict[str, Any]) -> None:
        """Serves no relay template."""

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""


class FakeWarmIntroPlugin:
    __name__ = "fake-warm-intro"

    @hookimpl
    def darkmesh_register_skills(self) -> list[SkillSpec]:
        return [SkillSpec(name="warm-intro", factory=FakeWarmIntro, settings=FakeSkillSettings)]


async def _client(app: Any, client_addr: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client_addr, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost:8001",
                             follow_redirects=False)


@pytest_asyncio.fixture
async def node() -> AsyncIterator[tuple[Any, Any]]:
    host = make_host(FakeWarmIntroPlugin(), node_id="node_b")
    async with running_node_app(host) as app:
        yield host, app


async def _login(client: httpx.AsyncClient, app: Any) -> str:
    """Log in through the printed link; return the page's CSRF token."""
    access: DashboardAccess = app.state.dashboard
    token = parse_qs(urlsplit(access.login_url()).query)["token"][0]
    answer = await client.get(f"{UI}/login", params={"token": token})
    assert answer.status_code == 200
    client.cookies.set(COOKIE_NAME, answer.cookies[COOKIE_NAME], path=UI)
    page = await client.get(UI)
    assert page.status_code == 200
    return _csrf(page.text)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


# ------------------------------------------------------------------ access rules


@pytest.mark.asyncio
async def test_pages_need_a_login_and_the_link_logs_in(node: tuple[Any, Any]) -> None:
    _, app = node
    async with await _client(app) as client:
        first = await client.get(UI)
        assert first.status_code == 303 and first.headers["location"] == f"{UI}/login"
        form = await client.get(f"{UI}/login")
        assert form.status_code == 200 and 'name="secret"' in form.text
        wrong = await client.get(f"{UI}/login", params={"token": "not-the-secret"})
        assert wrong.status_code == 401 and COOKIE_NAME not in wrong.cookies
        token = parse_qs(urlsplit(app.state.dashboard.login_url()).query)["token"][0]
        good = await client.get(f"{UI}/login", params={"token": token})
        assert good.status_code == 200 and 'http-equiv="refresh"' in good.text
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "path=/darkmesh/ui" in cookie
        client.cookies.set(COOKIE_NAME, good.cookies[COOKIE_NAME], path=UI)
        page = await client.get(UI)
        assert page.status_code == 200 and "Pending approvals" in page.text


@pytest.mark.asyncio
async def test_login_form_with_the_secret(node: tuple[Any, Any]) -> None:
    _, app = node
    secret = app.state.dashboard.secret
    async with await _client(app) as client:
        refused = await client.post(f"{UI}/login", data={"secret": secret + "x"})
        assert refused.status_code == 401 and "wrong session secret" in refused.text
        accepted = await client.post(f"{UI}/login", data={"secret": secret})
        assert accepted.status_code == 303 and accepted.headers["location"] == UI
        assert accepted.cookies[COOKIE_NAME]


@pytest.mark.asyncio
async def test_generated_secret_is_per_process_and_printed() -> None:
    first = make_host(node_id="node_a")
    second = make_host(node_id="node_a")
    one, two = create_node_app(first), create_node_app(second)
    assert one.state.dashboard.secret != two.state.dashboard.secret
    assert one.state.dashboard.secret in one.state.dashboard.banner()
    configured = make_host(node_id="node_a", dashboard_secret="operator-chosen-secret")
    banner = create_node_app(configured).state.dashboard.banner()
    assert "operator-chosen-secret" not in banner and "dashboard_secret" in banner
    for host in (first, second, configured):
        await host.stop()


@pytest.mark.asyncio
async def test_remote_clients_are_refused_unless_a_secret_is_configured() -> None:
    loopback_only = make_host(node_id="node_a")
    app = create_node_app(loopback_only)
    async with await _client(app, "203.0.113.7") as remote:
        for path in (UI, f"{UI}/login"):
            answer = await remote.get(path)
            assert answer.status_code == 403
            assert "loopback clients only" in answer.json()["detail"]
        assert (await remote.post(f"{UI}/login", data={"secret": "x"})).status_code == 403
    async with await _client(app, "::1") as local:
        assert (await local.get(f"{UI}/login")).status_code == 200
    configured = make_host(node_id="node_a", dashboard_secret="remote-operator-secret")
    async with await _client(create_node_app(configured), "203.0.113.7") as remote:
        assert (await remote.get(f"{UI}/login")).status_code == 200
        login = await remote.post(f"{UI}/login", data={"secret": "remote-operator-secret"})
        assert login.status_code == 303
    opened = make_host(node_id="node_a", dashboard_loopback_only=False)
    async with await _client(create_node_app(opened), "203.0.113.7") as remote:
        assert (await remote.get(f"{UI}/login")).status_code == 200
    for host in (loopback_only, configured, opened):
        await host.stop()


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    access = DashboardAccess(secret="s", session_ttl_seconds=60, clock=lambda: now[0])
    session = access.open_session()
    scope = {"type": "http", "headers": [(b"cookie", f"{COOKIE_NAME}={session.session_id}"
                                          .encode())]}
    assert access.session_of(Request(scope)) is session
    now[0] += 61
    assert access.session_of(Request(scope)) is None
    opened = [access.open_session() for _ in range(100)]
    assert len(access._sessions) == 64 and opened[-1].session_id in access._sessions


@pytest.mark.asyncio
async def test_repeated_failed_logins_from_one_address_are_throttled() -> None:
    host = make_host(node_id="node_a", dashboard_secret="weak-but-configured")
    app = create_node_app(host)
    async with await _client(app, "203.0.113.7") as guesser, \
            await _client(app, "198.51.100.4") as operator:
        for attempt in range(MAX_FAILED_LOGINS):
            wrong = await guesser.post(f"{UI}/login", data={"secret": f"guess-{attempt}"})
            assert wrong.status_code == 401
        # Throttled now, on both login routes and even with the right secret.
        for answer in (await guesser.post(f"{UI}/login", data={"secret": "weak-but-configured"}),
                       await guesser.get(f"{UI}/login", params={"token": "guess"})):
            assert answer.status_code == 429
            assert answer.json()["reason"] == "dashboard_login_throttled"
            assert 1 <= int(answer.headers["Retry-After"]) <= 301
        # Another address is unaffected and logs in.
        login = await operator.post(f"{UI}/login", data={"secret": "weak-but-configured"})
        assert login.status_code == 303
    await host.stop()


def test_login_throttle_ages_out_resets_on_success_and_stays_bounded() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window_seconds=60, max_clients=5,
                             clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("a")
        now[0] += 1
    with pytest.raises(HTTPProblem) as refused:
        throttle.check("a")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "58"  # oldest failure at 1000, now 1003
    now[0] = 1061  # the first failure aged out: one more try
    throttle.check("a")
    throttle.failed("b")
    throttle.failed("b")
    throttle.succeeded("b")
    for _ in range(3):
        throttle.check("b")  # a success forgot b's failures
        throttle.failed("b")
    with pytest.raises(HTTPProblem):
        throttle.check("b")
    for index in range(50):
        throttle.failed(f"client-{index}")
    assert len(throttle._failures) == 5


# ------------------------------------------------------------------------- CSRF


@pytest.mark.asyncio
async def test_state_changes_need_a_session_and_the_csrf_token(node: tuple[Any, Any]) -> None:
    host, app = node
    skill = host.skills["warm-intro"]
    async with await _client(app) as anonymous:
        answer = await anonymous.post(f"{UI}/approvals/ap1/approve", data={"csrf_token": "x"})
        assert answer.status_code == 401 and "log in" in answer.json()["detail"]
    async with await _client(app) as client:
        token = await _login(client, app)
        missing = await client.post(f"{UI}/approvals/ap1/approve")
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        wrong = await client.post(f"{UI}/approvals/ap1/approve",
                                  data={"csrf_token": token[:-1] + "x"})
        assert wrong.status_code == 403
        as_json = await client.post(f"{UI}/approvals/ap1/approve", json={"csrf_token": token})
        assert as_json.status_code == 403
        assert skill.decisions == []
        good = await client.post(f"{UI}/approvals/ap1/approve", data={"csrf_token": token})
        assert good.status_code == 303 and good.headers["location"] == f"{UI}#approvals"
        assert skill.decisions == [("ap1", "approve")]
        page = await client.get(UI)
        assert "approval ap1: approved" in page.text
        assert "approval ap1: approved" not in (await client.get(UI)).text  # shown once
        logout = await client.post(f"{UI}/logout", data={"csrf_token": token})
        assert logout.status_code == 303
        assert (await client.get(UI)).status_code == 303


@pytest.mark.asyncio
async def test_skill_errors_become_notices_and_bad_ids_are_refused(
    node: tuple[Any, Any],
) -> None:
    _, app = node
    async with await _client(app) as client:
        token = await _login(client, app)
        unknown = await client.post(f"{UI}/approvals/nope/decline", data={"csrf_token": token})
        assert unknown.status_code == 303
        page = (await client.get(UI)).text
        assert "approval nope not declined: 404: approval_id not found" in page
        dotted = await client.post(f"{UI}/approvals/a.b/approve", data={"csrf_token": token})
        assert dotted.status_code == 400 and "approval_id" in dotted.json()["detail"]
        long_field = await client.post(f"{UI}/approvals/ap1/approve",
                                       data={"csrf_token": token, "x": "y" * 20_000})
        assert long_field.status_code == 413
        huge = await client.post(f"{UI}/approvals/ap1/approve",
                                 content=b"a=" + b"b" * 70_000,
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600),
       content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=xyz",
                                     "multipart/form-data", "text/plain", "application/json"]),
       path=st.sampled_from(["/approvals/ap1/approve", "/trust/add", "/trust/remove",
                             "/keys/node_a/accept", "/logout", "/login"]))
def test_hostile_posts_never_fail_with_500(body: bytes, content_type: str, path: str) -> None:
    import asyncio

    async def run() -> int:
        async with running_node_app(make_host(FakeWarmIntroPlugin(), node_id="node_b")) as app, \
                await _client(app) as client:
            await _login(client, app)
            answer = await client.post(UI + path, content=body,
                                       headers={"content-type": content_type})
            if answer.headers.get("content-type", "").startswith("application/json"):
                assert "detail" in answer.json()
            return answer.status_code

    status = asyncio.run(run())
    assert status < 500 and status in (303, 400, 401, 403, 409, 413)


# ----------------------------------------------------------------------- panels


@pytest.mark.asyncio
async def test_panels_render_without_javascript_and_escape_everything(
    node: tuple[Any, Any],
) -> None:
    host, app = node
    await host.store.upsert("contacts", [{"email": "taylor@companyx.com", "name": HOSTILE,
                                          "org": "Company X", "role": "BD"}])
    async with await _client(app) as client:
        token = await _login(client, app)
        page = await client.get(UI)
        html = page.text
        assert "<script" not in html.lower()
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert 'data-approval-id="ap1"' in html
        assert 'action="/darkmesh/ui/approvals/ap1/approve"' in html
        assert re.search(r'data-dataset="contacts">.*?class="records">1<', html, re.DOTALL)
        assert "node_b" in html and "warm_intro" in html
        assert "f1f1f1f1" in html  # the v2 key fingerprint, from the /keys route
        await client.post(f"{UI}/approvals/ap1/approve", data={"csrf_token": token})
        after = (await client.get(UI)).text
        assert "Nothing waits for your consent." in after
        assert re.search(r'class="intro" data-request-id="rq1">.*?class="state">revealed<',
                         after, re.DOTALL)
        assert "<script" not in after.lower()


@pytest.mark.asyncio
async def test_settings_panel_redacts_every_secret(node: tuple[Any, Any]) -> None:
    _, app = node
    async with await _client(app) as client:
        await _login(client, app)
        html = (await client.get(UI)).text
        assert TEST_NODE_KEY not in html and SKILL_SECRET not in html
        assert app.state.dashboard.secret not in html
        assert "visible-setting" in html and "**********" in html
        assert 'data-section="warm_intro"' in html and 'data-section="node"' in html


@pytest.mark.asyncio
async def test_request_lookup_reads_the_status_route(node: tuple[Any, Any]) -> None:
    _, app = node
    async with await _client(app) as client:
        await _login(client, app)
        found = (await client.get(UI, params={"request_id": "rq1"})).text
        assert 'class="request-state">complete<' in found and "Taylor BD" in found
        missing = (await client.get(UI, params={"request_id": "rq2"})).text
        assert "Could not load: 404: unknown request_id rq2" in missing
        hostile = (await client.get(UI, params={"request_id": "../approvals"})).text
        assert "a request id is 1-64 letters" in hostile


@pytest.mark.asyncio
async def test_without_the_skill_its_panels_say_so() -> None:
    async with running_node_app(make_host(node_id="node_a")) as app:
        async with await _client(app) as client:
            await _login(client, app)
            html = (await client.get(UI)).text
        assert html.count("warm-intro skill not installed") >= 3
        assert ("AAuth not installed" in html) or ("AAuth verifier not active" in html)
        assert "Installed plugins" in html and "darkmesh-sdl.memory-store" in html


@pytest.mark.asyncio
async def test_dashboard_routes_declare_operator_session(node: tuple[Any, Any]) -> None:
    _, app = node
    ui_routes = [m for m in app.state.route_table if m.path.startswith(UI)]
    assert {m.spec.capability for m in ui_routes} == {"operator-session"}
    assert {(m.path, m.spec.methods[0]) for m in ui_routes} >= {
        (UI, "GET"), (f"{UI}/login", "POST"), (f"{UI}/approvals/{{approval_id}}/approve", "POST"),
        (f"{UI}/trust/add", "POST"), (f"{UI}/trust/remove", "POST"),
    }
