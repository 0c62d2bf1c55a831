"""The dashboard in headless Chromium (Debian's ``chromium`` driven by Playwright), on real
processes: a relay and nodes A and B (``darkmesh node serve``) with the warm-intro skill
and the demo data. A's v2 request and consent create a pending approval on B; the
browser logs in to B's dashboard through the link ``node serve`` printed, sees the
approval and approves it; A's intro status (through A's route) becomes ``revealed``.

Screenshots go to ``$DARKMESH_TEST_ARTIFACTS`` or ``tests/artifacts/``. Without chromium
the test fails (it never skips): install it with ``apt-get install chromium`` or point
``DARKMESH_TEST_CHROMIUM`` at a binary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.cluster import SKILL, LocalCluster

from sdl_core.testing.polling import until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com"}
TARGET = {"target": {"company": "Company X", "role": "Business Development"}}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOGIN_LINE = re.compile(r"^dashboard: (http://\S+/darkmesh/ui/login\?token=\S+)", re.MULTILINE)


def chromium_path() -> str:
    path = os.environ.get("DARKMESH_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(f"the dashboard browser test needs Chromium at {path}: install Debian's "
                    "package (apt-get install chromium) or set DARKMESH_TEST_CHROMIUM")
    return path


def artifacts_dir() -> Path:
    configured = os.environ.get("DARKMESH_TEST_ARTIFACTS")
    root = Path(configured) if configured else Path(__file__).resolve().parents[1] / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root




@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        yield cluster.start_demo(SELF_IDS, warm_intro={"response_wait_seconds": 5.0})


def login_url(cluster: LocalCluster, node_id: str) -> str:
    """The link ``darkmesh node serve`` printed for this run of the node."""
    log = cluster.nodes[node_id].log
    found = until(lambda: LOGIN_LINE.search(log.read_text(errors="replace")),
                  f"the dashboard link in {log}", timeout=10)
    return str(found.group(1))


def status_of(cluster: LocalCluster, node_id: str, request_id: str) -> dict[str, Any]:
    with cluster.client(node_id) as http:
        response = http.get(f"{SKILL}/requests/{request_id}")
        response.raise_for_status()
        return dict(response.json())


def test_operator_approves_in_the_browser_and_the_intro_is_revealed(
    cluster: LocalCluster,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    shots = artifacts_dir()
    with cluster.client("node_a") as http:
        answer = http.post(f"{SKILL}/request", json=TARGET)
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        consent_id = answer.json()["candidates"][0]["consent_id"]
        pending = http.post(f"{SKILL}/consent", json={"request_id": request_id,
                                                      "consent_id": consent_id})
        assert pending.json()["state"] == "pending"

    def b_has_approval() -> bool:
        with cluster.client("node_b") as http:
            items = http.get(f"{SKILL}/approvals").json()["approvals"]
        return any(item["request_id"] == request_id for item in items)

    until(b_has_approval, what="the pending approval on node_b")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(java_script_enabled=False).new_page()
            page.goto(login_url(cluster, "node_b"))
            page.wait_for_url(re.compile(r"/darkmesh/ui$"))
            expect(page.locator("h1")).to_contain_text("node_b")
            expect(page.locator("#readiness")).to_have_text(re.compile("ready"))
            row = page.locator(f'tr.approval[data-request-id="{request_id}"]')
            expect(row).to_have_count(1)
            expect(row).to_contain_text("node_a")
            expect(row).to_contain_text("Taylor BD")
            page.screenshot(path=str(shots / "dashboard-pending-approval.png"), full_page=True)

            row.get_by_role("button", name="Approve").click()
            page.wait_for_url(re.compile(r"/darkmesh/ui#approvals$"))
            expect(page.locator(".notice.ok")).to_contain_text("approved")
            expect(page.locator(f'tr.approval[data-request-id="{request_id}"]')).to_have_count(0)
            page.screenshot(path=str(shots / "dashboard-approved.png"), full_page=True)

            def revealed() -> dict[str, Any] | None:
                status = status_of(cluster, "node_a", request_id)
                states = {c["consent_id"]: c["state"] for c in status["candidates"]}
                return status if states.get(consent_id) == "revealed" else None

            status = until(revealed, timeout=30, what="the intro revealed on node_a")
            intro = status["intros"][consent_id]
            assert intro["target_contact"]["email"] == "taylor@companyx.com"
            assert intro["connector"]["node_id"] == "node_b"

            page.reload()
            expect(page.locator(f'tr.intro[data-request-id="{request_id}"] .state')) \
                .to_have_text("revealed")
            a_page = browser.new_context(java_script_enabled=False).new_page()
            a_page.goto(login_url(cluster, "node_a"))
            a_page.wait_for_url(re.compile(r"/darkmesh/ui$"))
            a_page.fill("#request_id", request_id)
            a_page.get_by_role("button", name="Show status").click()
            expect(a_page.locator(f'tr.candidate[data-consent-id="{consent_id}"] .state')) \
                .to_have_text("revealed")
            a_page.screenshot(path=str(shots / "dashboard-requester-revealed.png"),
                              full_page=True)
        finally:
            browser.close()
    for name in ("dashboard-pending-approval.png", "dashboard-approved.png",
                 "dashboard-requester-revealed.png"):
        assert (shots / name).stat().st_size > 1000


def test_dashboard_refuses_without_a_session_and_csrf(cluster: LocalCluster) -> None:
    base = cluster.nodes["node_b"].url
    with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as http:
        assert http.get("/darkmesh/ui").headers["location"] == "/darkmesh/ui/login"
        assert http.post("/darkmesh/ui/approvals/x/approve").status_code == 401
        token = login_url(cluster, "node_b").split("token=", 1)[1]
        login = http.get("/darkmesh/ui/login", params={"token": token})
        assert login.status_code == 200
        forged = http.post("/darkmesh/ui/approvals/x/approve", data={"csrf_token": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
