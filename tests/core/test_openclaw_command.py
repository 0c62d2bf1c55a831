"""``darkmesh ingest openclaw`` through the CLI, against real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sdl_core.cli import main
from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, make_host
from sdl_core.testing.served import served_app

OPENCLAW = ("darkmesh-sdl.memory-store", "darkmesh-sdl.http", "darkmesh-sdl.openclaw")


def _gmail_events(now: datetime) -> list[dict[str, Any]]:
    stamp = now.isoformat()
    return ([{"channel": "gmail", "from": "c1@example.com", "to": "me@example.org",
              "timestamp": stamp} for _ in range(10)]
            + [{"channel": "gmail", "from": "me@example.org", "to": "c1@example.com",
                "timestamp": stamp} for _ in range(10)])


@pytest.fixture
def node() -> Iterator[tuple[str, Any]]:
    host = make_host(node_id="node_oc")
    with served_app(create_node_app(host), health_path="/darkmesh/health") as url:
        yield url, host


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    runner = CliRunner()
    return runner.invoke(main, ["ingest", "openclaw", *args], env=env, catch_exceptions=False)


def test_ten_in_ten_out_today_with_self_identifier_is_0_925(
        node: tuple[str, Any], tmp_path: Path) -> None:
    url, _host = node
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(json.dumps(e) for e in _gmail_events(datetime.now(UTC))))
    result = run("--events-file", str(events), "--self-identifier", "me@example.org",
                 "--url", url, "--node-key", TEST_NODE_KEY, "--auth-mode", "hmac", "--quiet")
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["summary"] == {"events_processed": 20, "contacts_prepared": 1,
                                 "interactions_prepared": 1}
    assert output["ingest"] == {"contacts": {"dataset": "contacts", "count": 1},
                                "interactions": {"dataset": "interactions", "count": 1}}
    status = run("--events-file", str(events), "--self-identifier", "me@example.org",
                 "--dry-run")
    preview = json.loads(status.stdout)
    assert preview["top_contacts"] == [{"name": "c1@example.com", "email": "c1@example.com",
                                        "org": "", "role": "", "strength": 0.925}]


def test_no_input_flag_names_all_three() -> None:
    result = CliRunner().invoke(main, ["ingest", "openclaw", "--dry-run"])
    assert result.exit_code == 2
    assert "--events-file" in result.output and "--events-url" in result.output
    assert "--autodiscover" in result.output


def test_invalid_file_is_fatal_and_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[{not json")
    result = CliRunner().invoke(main, ["ingest", "openclaw", "--events-file", str(bad),
                                       "--dry-run"])
    assert result.exit_code == 1
    assert str(bad) in result.output


def test_warns_without_self_identifier(tmp_path: Path) -> None:
    events = tmp_path / "e.json"
    events.write_text(json.dumps(_gmail_events(datetime.now(UTC))))
    result = CliRunner().invoke(main, ["ingest", "openclaw", "--events-file", str(events),
                                       "--dry-run"])
    assert result.exit_code == 0
    assert "no --self-identifier" in result.stderr
    by_email = {c["email"]: c["strength"] for c in json.loads(result.stdout)["top_contacts"]}
    assert by_email == {"c1@example.com": 0.425, "me@example.org": 0.425}


def _fake_openclaw(seen: list[dict[str, str]]) -> Starlette:
    now = datetime.now(UTC).isoformat()

    async def integrations(request: Request) -> JSONResponse:
        seen.append({"path": request.url.path, "auth": request.headers.get("authorization", "")})
        return JSONResponse({"integrations": [
            {"id": "gm-1", "provider": "gmail", "connected": True},
            {"id": "sl-1", "provider": "slack", "connected": False},
            {"id": "wa-1", "provider": "whatsapp", "status": "healthy"},
        ]})

    async def events(request: Request) -> JSONResponse:
        seen.append({"path": request.url.path, "query": request.url.query,
                     "auth": request.headers.get("authorization", "")})
        if request.query_params.get("sources") != "gmail":
            return JSONResponse({"events": []})
        return JSONResponse({"events": [{"channel": "gmail", "counterparty": "x@corp.com",
                                         "direction": "inbound", "timestamp": now}]})

    async def missing(request: Request) -> JSONResponse:
        return JSONResponse({"detail": "no"}, status_code=404)

    return Starlette(routes=[Route("/api/integrations", integrations),
                             Route("/api/events", events),
                             Route("/{rest:path}", missing)])


def test_autodiscovery_filters_sources_and_keeps_token_on_its_origin(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    other_seen: list[dict[str, str]] = []
    with served_app(_fake_openclaw(seen)) as base, served_app(_fake_openclaw(other_seen)) as other:
        result = run("--autodiscover", "--openclaw-base-url", base, "--include-source", "gmail",
                     "--openclaw-token", "tok-123", "--events-url", f"{other}/api/events",
                     "--self-identifier", "me@example.org", "--dry-run")
        assert result.exit_code == 0, result.output
        output = json.loads(result.stdout)
    assert output["autodiscovery"]["sources"] == [
        {"source_id": "gm-1", "name": "gmail", "provider": "gmail"}]
    assert output["autodiscovery"]["fetch"]["mode"] == "aggregate"
    assert "sources=gmail" in output["autodiscovery"]["fetch"]["url"]
    assert output["summary"]["autodiscovered_sources"] == 1
    assert [c["email"] for c in output["top_contacts"]] == ["x@corp.com"]
    assert all(entry["auth"] == "Bearer tok-123" for entry in seen)
    # The --events-url host is another origin: no token went there.
    assert other_seen and all(entry["auth"] == "" for entry in other_seen)
    assert output["summary"]["events_processed"] == 1
