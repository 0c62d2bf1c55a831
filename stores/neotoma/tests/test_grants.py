"""Grant provisioning (``neotoma.md`` §5): every case, through real HTTP to the stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import HAVE_AAUTH, STRICT_TOKEN, FakeClock, node_host
from darkmesh_neotoma.cli import neotoma
from darkmesh_neotoma.client import NeotomaClient
from darkmesh_neotoma.grants import (
    GRANT_ID_KEY,
    Outcome,
    Provisioner,
    ProvisionError,
    desired_grant,
    normal_capabilities,
)
from darkmesh_neotoma.runtime import settings_for
from darkmesh_neotoma.settings import NeotomaSettings
from standin import StandinServer

from sdl_core import AgentIdentity, Host

DEFAULT_CAPS = [{"op": "retrieve", "entity_types": ["contact", "warm_intro_reveal"]},
                {"op": "store_structured", "entity_types": ["warm_intro_reveal"]}]


class Harness:
    def __init__(self, server: StandinServer, host: Host, clock: FakeClock) -> None:
        self.server = server
        self.host = host
        self.clock = clock
        self.slept: list[float] = []
        assert host.signer is not None
        self.identity = host.signer.identity("node")

    async def sleep(self, seconds: float) -> None:
        # The stand-in's clock moves instead of the test waiting.
        self.slept.append(seconds)
        self.clock.advance(seconds)

    async def run(self, *, apply: bool = True, identity: AgentIdentity | None = None,
                  settings: NeotomaSettings | None = None) -> Outcome:
        chosen = settings or settings_for(self.host)
        client = NeotomaClient(chosen, signer=self.host.signer)
        try:
            return await Provisioner(
                client=client, identity=identity or self.identity, settings=chosen,
                state=self.host.state("neotoma"), sleep=self.sleep,
            ).run(apply=apply)
        finally:
            await client.aclose()

    def grants(self) -> list[dict[str, Any]]:
        return list(self.server.neotoma.grants.grants.values())

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.server.neotoma.requests
                if r["path"].startswith("/agents/grants") and r["method"] != "GET"]


@pytest.fixture
def harness(standin: StandinServer, tmp_path: Path, clock: FakeClock) -> Harness:
    host = node_host(tmp_path, standin.url)
    host.prepare()
    return Harness(standin, host, clock)


def post_grant(server: StandinServer, **fields: Any) -> dict[str, Any]:
    response = httpx.post(server.url + "/agents/grants", json={
        "label": "old", "capabilities": DEFAULT_CAPS, **fields})
    assert response.status_code == 201, response.text
    return response.json()["grant"]  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_create_pins_the_thumbprint_only_then_waits_and_probes(harness: Harness) -> None:
    outcome = await harness.run()
    plan = outcome.plan
    assert outcome.exit_code == 0 and plan["action"] == "create" and plan["applied"] is True
    assert set(plan) >= {"neotoma_url", "sub", "iss", "thumbprint", "action", "grant_id",
                         "applied"}
    [grant] = harness.grants()
    assert grant["grant_id"] == plan["grant_id"]
    assert grant["match_thumbprint"] == harness.identity.thumbprint
    assert grant["match_sub"] is None and grant["match_iss"] is None
    assert grant["label"] == "Darkmesh node darkmesh-node@node_b"
    assert grant["notes"] == ("managed by darkmesh; sub=darkmesh-node@node_b; "
                              "iss=https://darkmesh.local")
    assert normal_capabilities(grant["capabilities"]) == normal_capabilities(DEFAULT_CAPS)
    assert harness.host.state("neotoma").get(GRANT_ID_KEY) == plan["grant_id"]
    assert harness.slept and all(s > 5 for s in harness.slept)
    assert plan["admitted"] is True and plan["admission_reason"] == "admitted"
    grant_calls = [r for r in harness.server.neotoma.requests
                   if r["path"].startswith("/agents/grants")]
    assert grant_calls and all("signature" not in r["headers"] and
                               "signature-input" not in r["headers"] for r in grant_calls)


@pytest.mark.asyncio
async def test_second_run_is_a_noop_that_writes_nothing(harness: Harness) -> None:
    await harness.run()
    writes, slept = len(harness.writes()), len(harness.slept)
    outcome = await harness.run()
    assert outcome.plan["action"] == "noop" and outcome.plan["applied"] is True
    assert outcome.exit_code == 0
    assert len(harness.writes()) == writes and len(harness.slept) == slept


@pytest.mark.asyncio
async def test_drift_is_patched_with_only_the_differing_fields(harness: Harness) -> None:
    created = (await harness.run()).plan["grant_id"]
    drifted = httpx.patch(harness.server.url + f"/agents/grants/{created}", json={
        "label": "renamed", "match_sub": "darkmesh-node@node_b", "match_iss": "https://x",
        "capabilities": [{"op": "retrieve", "entity_types": ["contact"]}]})
    assert drifted.status_code == 200
    outcome = await harness.run()
    plan = outcome.plan
    assert plan["action"] == "update" and plan["applied"] is True and outcome.exit_code == 0
    assert set(plan["diff"]) == {"label", "match", "capabilities"}
    assert plan["diff"]["label"] == {"from": "renamed", "to": "Darkmesh node darkmesh-node@node_b"}
    assert plan["diff"]["match"]["to"] == {"match_sub": None, "match_iss": None}
    patch = [r for r in harness.writes() if r["method"] == "PATCH"][-1]
    assert set(json.loads(patch["body"])) == {"label", "match_sub", "match_iss", "capabilities"}
    [grant] = harness.grants()
    assert grant["match_sub"] is None and grant["label"].startswith("Darkmesh node")


@pytest.mark.asyncio
@pytest.mark.parametrize("action", ["suspend", "revoke"])
async def test_suspended_or_revoked_is_reported_never_restored(
    harness: Harness, action: str
) -> None:
    gid = (await harness.run()).plan["grant_id"]
    assert httpx.post(harness.server.url + f"/agents/grants/{gid}/{action}").status_code == 200
    writes = len(harness.writes())
    outcome = await harness.run()
    status = {"suspend": "suspended", "revoke": "revoked"}[action]
    assert outcome.plan["action"] == status and outcome.plan["applied"] is False
    assert outcome.exit_code == 1 and outcome.plan["grant_id"] == gid
    assert any(f"POST /agents/grants/{gid}/restore" in m and "Inspector" in m
               for m in outcome.messages)
    assert len(harness.writes()) == writes


@pytest.mark.asyncio
async def test_key_rotation_creates_then_retires_old_grants(harness: Harness) -> None:
    upstream = post_grant(harness.server, match_sub="darkmesh-node@node_b",
                          match_iss="https://darkmesh.local", match_thumbprint="old-key-1")
    marked = post_grant(harness.server, match_thumbprint="old-key-2",
                        notes="managed by darkmesh; sub=darkmesh-node@node_b; iss=x")
    recorded = post_grant(harness.server, match_thumbprint="old-key-3")
    harness.host.state("neotoma").put(GRANT_ID_KEY, recorded["grant_id"])
    stranger = post_grant(harness.server, match_thumbprint="someone-else",
                          notes="managed by darkmesh; sub=darkmesh-node@node_c; iss=x")
    outcome = await harness.run()
    plan = outcome.plan
    assert plan["action"] == "create"
    assert sorted(plan["retired"]) == sorted(
        [upstream["grant_id"], marked["grant_id"], recorded["grant_id"]])
    by_id = {g["grant_id"]: g for g in harness.grants()}
    assert all(by_id[g]["status"] == "revoked" for g in plan["retired"])
    assert by_id[stranger["grant_id"]]["status"] == "active"
    paths = [r["path"] for r in harness.writes()]
    first_revoke = next(i for i, p in enumerate(paths) if p.endswith("/revoke"))
    assert paths.index("/agents/grants", 4) < first_revoke  # new grant before any revoke
    assert harness.host.state("neotoma").get(GRANT_ID_KEY) == plan["grant_id"]


@pytest.mark.asyncio
async def test_dry_run_writes_nothing(harness: Harness) -> None:
    outcome = await harness.run(apply=False)
    assert outcome.plan["action"] == "create" and outcome.plan["applied"] is False
    assert outcome.exit_code == 1 and harness.writes() == [] and harness.grants() == []
    assert harness.slept == []


@pytest.mark.asyncio
async def test_configured_label_and_capabilities(harness: Harness) -> None:
    settings = NeotomaSettings(url=harness.server.url, grant_label="Node B",
                               grant_capabilities=[{"op": "store", "entity_types": ["x", "a"]}])
    desired = desired_grant(harness.identity, settings)
    assert desired["capabilities"] == [{"op": "store", "entity_types": ["a", "x"]}]
    await harness.run(settings=settings)
    [grant] = harness.grants()
    assert grant["label"] == "Node B"


# ---------------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_401_names_bearer_and_inspector(strict_standin: StandinServer,
                                              tmp_path: Path) -> None:
    host = node_host(tmp_path, strict_standin.url, neotoma={"token": "wrong"})
    host.prepare()
    assert host.signer is not None
    client = NeotomaClient(settings_for(host), signer=host.signer)
    with pytest.raises(ProvisionError) as info:
        await Provisioner(client=client, identity=host.signer.identity("node"),
                          settings=settings_for(host), state=host.state("neotoma")).run(
            apply=True)
    await client.aclose()
    assert "Bearer" in str(info.value) and "Inspector" in str(info.value)


def mocked(status: int, body: Any) -> Provisioner:
    def handler(request: httpx.Request) -> httpx.Response:
        assert "signature" not in request.headers
        return httpx.Response(status, json=body)

    settings = NeotomaSettings(url="http://neotoma.test")
    client = NeotomaClient(settings, signer=None, transport=httpx.MockTransport(handler))

    class _State:
        def get(self, key: str, default: Any = None) -> Any:
            return default

    identity = AgentIdentity(sub="s", iss="i", thumbprint="t", public_jwk={})
    return Provisioner(client=client, identity=identity, settings=settings,
                       state=_State())  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("status, body, needles", [
    (404, {"error_code": "RESOURCE_NOT_FOUND"}, ["Stronger AAuth Admission", ">= 0.9.0"]),
    (403, {"error_code": "CAPABILITY_DENIED"}, ["unsigned user calls"]),
    (500, {"error_code": "BOOM", "message": "db down"}, ["500", "db down"]),
    (200, {"items": []}, ["without a grants list", "items"]),
])
async def test_listing_errors_are_explained(status: int, body: Any, needles: list[str]) -> None:
    with pytest.raises(ProvisionError) as info:
        await mocked(status, body).run(apply=True)
    for needle in needles:
        assert needle in str(info.value)


# ------------------------------------------------------------------------- CLI


# The CLI builds its host from installed entry points, so its signer is the real plugin.
needs_aauth = pytest.mark.skipif(not HAVE_AAUTH, reason="the CLI signs with darkmesh-aauth, "
                                 "not installed in this environment")


def write_config(tmp_path: Path, url: str, *, signer: bool = True) -> Path:
    path = tmp_path / "darkmesh.toml"
    text = ("[node]\nnode_id = \"node_b\"\nstore = \"memory\"\n"
            f"auth_mode = \"{'either' if signer else 'hmac'}\"\n"
            f"node_key = \"k-0123456789\"\ndata_dir = \"{tmp_path / 'data'}\"\n"
            f"[neotoma]\nurl = \"{url}\"\nfallback_store = \"memory\"\n")
    if signer:
        from darkmesh_aauth.keys import generate_jwk

        text += f"[aauth]\nprivate_jwk = '{json.dumps(generate_jwk('Ed25519'))}'\n"
    path.write_text(text)
    return path


def test_cli_without_a_signer_says_what_to_install(standin: StandinServer,
                                                     tmp_path: Path) -> None:
    config = write_config(tmp_path, standin.url, signer=False)
    result = CliRunner().invoke(neotoma, ["--config", str(config), "grants", "provision"])
    assert result.exit_code != 0
    assert "darkmesh-aauth" in result.output and "keygen" in result.output


@needs_aauth
def test_cli_dry_run_prints_the_plan_and_exits_1(standin: StandinServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, standin.url)
    result = CliRunner().invoke(neotoma, ["--config", str(config), "grants", "provision",
                                          "--dry-run"])
    assert result.exit_code == 1, result.output
    plan = json.loads(result.stdout)
    assert plan["action"] == "create" and plan["applied"] is False
    assert standin.neotoma.grants.grants == {}


@needs_aauth
def test_cli_auto_creates_waits_past_the_cache_and_is_admitted(
    standin: StandinServer, tmp_path: Path
) -> None:
    """Real time: the probe right after creation would hit Neotoma's 5 s miss cache."""
    config = write_config(tmp_path, standin.url)
    runner = CliRunner()
    probe = runner.invoke(neotoma, ["--config", str(config), "probe"])
    assert probe.exit_code == 1 and json.loads(probe.stdout)["outcome"] == "no_match"
    result = runner.invoke(neotoma, ["--config", str(config), "grants", "provision", "--auto"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["action"] == "create" and plan["admitted"] is True
    again = runner.invoke(neotoma, ["--config", str(config), "grants", "provision", "--auto"])
    assert again.exit_code == 0 and json.loads(again.stdout)["action"] == "noop"
    listed = runner.invoke(neotoma, ["--config", str(config), "grants", "list"])
    assert [g["grant_id"] for g in json.loads(listed.stdout)["grants"]] == [plan["grant_id"]]


@needs_aauth
def test_cli_errors_exit_2(strict_standin: StandinServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, strict_standin.url)
    result = CliRunner().invoke(neotoma, ["--config", str(config), "grants", "provision",
                                          "--auto"])
    assert result.exit_code == 2
    assert "Bearer" in result.stderr and "Inspector" in result.stderr
    assert STRICT_TOKEN not in result.output
