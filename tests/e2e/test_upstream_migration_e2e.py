"""Migration from upstream (issue 06): a node B configured and stored the upstream way
(JSON config, Fernet ``.enc`` vault) is converted by ``darkmesh init --from-upstream``
and then serves a v2 warm intro to a regular node A, through real processes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from darkmesh_warm_intro.cluster import CLI, SKILL, LocalCluster, demo_rows, free_port

from sdl_core.testing.polling import until

pytestmark = pytest.mark.e2e

BASE = {"target": {"company": "Company X", "role": "Business Development"},
        "constraints": {"max_candidates": 3, "min_strength": 0.5}}


def _upstream_vault(path: Path) -> None:
    """Write B's demo datasets exactly as upstream v1 stored them."""
    path.mkdir(parents=True)
    key = Fernet.generate_key()
    (path / "vault.key").write_bytes(key)
    fernet = Fernet(key)
    for dataset in ("contacts", "interactions"):
        rows = demo_rows(f"node_b_{dataset}.csv")
        records = [{**row, "strength": float(row["strength"])} for row in rows]
        (path / f"{dataset}.enc").write_bytes(fernet.encrypt(json.dumps(records).encode()))




@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[tuple[LocalCluster, str]]:
    with LocalCluster() as cluster:
        cluster.start_relay()
        cluster.start_node("node_a", self_identifiers=["founder@startup.com"],
                           warm_intro={"response_wait_seconds": 5.0})
        cluster.ingest("node_a", "contacts", demo_rows("node_a_contacts.csv"))
        cluster.ingest("node_a", "interactions", demo_rows("node_a_interactions.csv"))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        _upstream_vault(tmp_path / "vault_b")
        upstream = {
            "node_id": "node_b", "port": port, "listen_url": url,
            "self_identifiers": ["casey@connector.com"],
            "relay_url": cluster.relay_url, "relay_key": cluster.relay_key,
            "node_key": cluster.node_key, "auth_mode": "hmac",
            "vault_path": str(tmp_path / "vault_b"), "dev_mode": False,
        }
        (tmp_path / "node_b.json").write_text(json.dumps(upstream))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DARKMESH_")}
        env["DARKMESH_LOAD_PLUGINS"] = "darkmesh-warm-intro"
        init = subprocess.run(
            [*CLI, "init", "--from-upstream", str(tmp_path / "node_b.json"),
             "--data-dir", str(tmp_path / "b-data"),
             "--vault-key-file", str(tmp_path / "b-keys" / "vault.key"),
             "-o", str(tmp_path / "node_b.toml")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert init.returncode == 0, init.stderr
        assert "dev_mode" in init.stderr  # dropped, with a warning
        # The migrated config serves on loopback; bind explicitly.
        toml = (tmp_path / "node_b.toml").read_text()
        assert "peer_key" in toml
        log = (tmp_path / "node_b.log").open("ab")
        process = subprocess.Popen([*CLI, "--config", str(tmp_path / "node_b.toml"),
                                    "--log-level", "warning", "node", "serve"],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        try:
            until(lambda: _healthy(url, process))
            cluster.wait_registered(2)
            yield cluster, url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()


def _healthy(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"migrated node exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/darkmesh/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_imported_upstream_vault_serves_a_v2_intro(migrated: tuple[LocalCluster, str]) -> None:
    cluster, b_url = migrated
    headers = {"X-Darkmesh-Key": cluster.node_key}
    status = httpx.get(f"{b_url}/darkmesh/integrations/status", headers=headers, timeout=10)
    assert status.status_code == 200, status.text
    counts = {i["name"]: i["records"] for i in status.json()["required_integrations"]}
    assert counts == {"contacts": 2, "interactions": 1}

    with cluster.client("node_a") as a:
        answer = a.post(SKILL + "/request", json={**BASE, "template": "warm_intro_v2"}).json()
        assert [c["score"] for c in answer["candidates"]] == [0.904]
        consent = {"request_id": answer["request_id"],
                   "consent_id": answer["candidates"][0]["consent_id"]}
        assert a.post(SKILL + "/consent", json=consent).json()["state"] == "pending"

    with httpx.Client(base_url=b_url, headers=headers, timeout=10) as b:
        approval_id = until(lambda: next(
            (x["approval_id"] for x in b.get(SKILL + "/approvals").json()["approvals"]
             if x["request_id"] == answer["request_id"]), None))
        assert b.post(SKILL + f"/approvals/{approval_id}/approve").json()["state"] == "approved"

    with cluster.client("node_a") as a:
        result = until(lambda: (r := a.post(SKILL + "/consent", json=consent).json())
                        .get("state") == "revealed" and r, timeout=30)
    assert result["intro"]["target_contact"]["name"] == "Taylor BD"
    assert result["intro"]["relationship_strength"] == 0.88
