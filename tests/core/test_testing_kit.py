"""The testing kit itself: make_host, InProcessMesh, and the contract suites (run against
toy implementations, plus broken ones the suites must catch)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Generator, Iterator, Sequence
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import Phase
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sdl_core import (
    AgentIdentity,
    InboundRequest,
    MailboxMessage,
    RouteSpec,
    SkillSpec,
    VerificationFailed,
    VerifiedAgent,
    hookimpl,
)
from sdl_core.auth import node_json
from sdl_core.errors import HTTPProblem
from sdl_core.testing.host import TEST_NODE_KEY, make_host
from sdl_core.testing.mesh import InProcessMesh, node_url
from sdl_core.testing.signer_contract import SignerContract
from sdl_core.testing.skill_contract import SkillContract

# -------------------------------------------------------------------- make_host


class NothingPlugin:
    __name__ = "nothing-plugin"


def test_make_host_is_fresh_unstarted_and_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_DISABLE_PLUGINS", "darkmesh-sdl.memory-store")
    first = make_host(NothingPlugin(), node_id="node_x")
    second = make_host()
    assert first.pm is not second.pm
    assert first.started is False and first.prepared is False
    names = {name for name, _ in first.pm.list_name_plugin()}
    # Only the test built-ins and the given plugin; the env switch does not leak in.
    assert names == {"darkmesh-sdl.memory-store", "darkmesh-sdl.http", "nothing-plugin"}
    assert first.settings.store == "memory" and first.settings.auth_mode == "hmac"
    assert first.settings.data_dir != second.settings.data_dir
    with pytest.raises(TypeError, match="either settings= or field overrides"):
        make_host(settings=first.settings, node_id="y")


# ------------------------------------------------------------------------ mesh


class PingSkill:
    """Publishes a post on request; records posts and mail it receives."""

    def __init__(self, host: Any, settings: Any) -> None:
        self.host = host
        self.posts: list[dict[str, Any]] = []
        self.mail: list[bytes] = []

    def _relay(self) -> Any:
        if self.host.relay is None:
            raise HTTPProblem(503, "no relay configured (DARKMESH_RELAY_URL)",
                              reason="no_relay")
        return self.host.relay

    async def publish(self, request: Request) -> Response:
        answer = await self._relay().publish({
            "request_id": secrets.token_hex(8), "requester_id": self.host.settings.node_id,
            "template": "ping_v1", "target": {"say": "ping"},
        })
        return JSONResponse({"seq": answer["seq"], "live_nodes": answer.get("live_nodes")})

    async def mail_to(self, request: Request) -> Response:
        body = node_json(request)
        to = body.get("to")
        if not isinstance(to, str):
            raise HTTPProblem(422, "to must be a node id", reason="invalid_field")
        await self._relay().mailbox_send(to, "r1", b"hello " + to.encode())
        return JSONResponse({"sent": True})

    def routes(self) -> list[RouteSpec]:
        return [RouteSpec(path="/publish", endpoint=self.publish, methods=("POST",),
                          capability="node.query"),
                RouteSpec(path="/mail", endpoint=self.mail_to, methods=("POST",),
                          capability="node.query")]

    async def handle_post(self, post: dict[str, Any]) -> None:
        if isinstance(post, dict) and post.get("template") == "ping_v1":
            self.posts.append(post)

    async def handle_mailbox(self, message: MailboxMessage) -> bool:
        try:
            self.mail.append(base64.b64decode(message.payload, validate=True))
        except (ValueError, TypeError):
            return False
        return True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"posts": len(self.posts), "mail": len(self.mail)}


PING_SPEC = SkillSpec(name="ping", factory=PingSkill, templates=("ping_v1",),
                      description="test skill: ping over the relay")


class PingPlugin:
    __name__ = "ping-plugin"

    @hookimpl
    def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
        yield PING_SPEC


@pytest.mark.asyncio
async def test_mesh_carries_posts_and_mail_between_nodes() -> None:
    async with InProcessMesh(["node_a", "node_b", "node_c"], plugins=[PingPlugin()]) as mesh:
        skills: dict[str, Any] = {nid: mesh.nodes[nid].skills["ping"] for nid in mesh.node_ids}
        # Every listener registers; then node_a's post reaches both others.
        async with mesh.relay_client() as relay:
            await mesh.wait_until(lambda: _registered(relay, 3), timeout=5)
        async with mesh.client("node_a") as operator:
            published = await operator.post("/darkmesh/skills/ping/publish")
            assert published.status_code == 200, published.text
            assert published.json()["live_nodes"] == 2
            await mesh.wait_until(lambda: skills["node_b"].posts and skills["node_c"].posts)
            assert skills["node_a"].posts == []  # own posts are skipped
            assert skills["node_b"].posts[0]["requester_id"] == "node_a"

            sent = await operator.post("/darkmesh/skills/ping/mail", json={"to": "node_c"})
            assert sent.json() == {"sent": True}
            await mesh.wait_until(lambda: skills["node_c"].mail)
            assert skills["node_c"].mail == [b"hello node_c"]
            assert skills["node_b"].mail == []

        # Node-to-node HTTP goes through the mesh transport too.
        async with mesh.nodes["node_b"].http_client(base_url=node_url("node_c")) as peer:
            health = await peer.get("/darkmesh/health")
        assert health.json() == {"status": "ok", "node_id": "node_c"}
        hosts = list(mesh.nodes.values())
    assert all(not h.started for h in hosts)


async def _registered(relay: httpx.AsyncClient, count: int) -> bool:
    answer = await relay.get("/darkmesh/relay/nodes")
    return answer.status_code == 200 and len(answer.json().get("nodes", [])) >= count


@pytest.mark.asyncio
async def test_mesh_client_uses_the_operator_key_and_unknown_members_fail() -> None:
    async with InProcessMesh(["node_a"], listener=False) as mesh:
        async with mesh.client("node_a") as operator:
            assert (await operator.get("/darkmesh/capabilities")).status_code == 200
        async with mesh.client("node_a", key="wrong") as intruder:
            assert (await intruder.get("/darkmesh/capabilities")).status_code == 401
        with pytest.raises(KeyError, match="no node 'node_z' in this mesh"):
            mesh.client("node_z")
        async with mesh.nodes["node_a"].http_client(base_url="http://elsewhere.mesh") as c:
            with pytest.raises(httpx.ConnectError, match=r"no mesh member at elsewhere\.mesh"):
                await c.get("/")


# -------------------------------------------------------------- SkillContract


class TestPingSkillContract(SkillContract):
    @pytest.fixture
    def skill_spec(self) -> SkillSpec:
        (spec,) = PingPlugin().darkmesh_register_skills()
        return spec


class FragileSkill(PingSkill):
    async def handle_post(self, post: dict[str, Any]) -> None:
        post["template"].lower()  # KeyError / AttributeError on hostile posts


def test_skill_contract_catches_a_skill_that_raises_on_hostile_posts() -> None:
    spec = SkillSpec(name="fragile", factory=FragileSkill, templates=("ping_v1",),
                     description="raises")
    contract = SkillContract()

    class Plugin:
        __name__ = "fragile-plugin"

        @hookimpl
        def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
            yield spec

    host = make_host(Plugin())
    with pytest.raises((KeyError, AttributeError, TypeError)):
        contract.test_hostile_posts_and_mailbox_messages_never_raise(host, spec)


def test_skill_contract_catches_a_route_that_answers_500() -> None:
    class Crashing(PingSkill):
        async def crash(self, request: Request) -> Response:
            return JSONResponse({"detail": "boom"}, status_code=500)

        def routes(self) -> list[RouteSpec]:
            return [RouteSpec(path="/crash", endpoint=self.crash, methods=("POST",),
                              capability="node.query")]

    spec = SkillSpec(name="crashing", factory=Crashing, description="answers 500")

    class Plugin:
        __name__ = "crashing-plugin"

        @hookimpl
        def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
            yield spec

    with pytest.raises(AssertionError, match="POST /darkmesh/skills/crashing/crash answered 500"):
        SkillContract().test_routes_answer_hostile_bodies_without_5xx(make_host(Plugin()), spec)


# ------------------------------------------------------------- SignerContract


class ToyAuth(httpx.Auth):
    """Covers method, authority, path, query and body digest with a nonce (toy, HMAC)."""

    requires_request_body = True

    def __init__(self, key: bytes, sub: str, cover_query: bool = True) -> None:
        self.key, self.sub, self.cover_query = key, sub, cover_query

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        nonce = secrets.token_hex(8)
        path, _, query = request.url.raw_path.decode().partition("?")
        base = _toy_base(request.method, request.url.netloc.decode(), path,
                         query if self.cover_query else "", request.content, nonce)
        request.headers["Signature-Key"] = self.sub
        request.headers["Signature-Input"] = nonce
        request.headers["Signature"] = hmac.new(self.key, base, hashlib.sha256).hexdigest()
        yield request


def _toy_base(method: str, authority: str, path: str, query: str, body: bytes,
              nonce: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{authority.lower()}\n{path}\n{query}\n{digest}\n{nonce}".encode()


class ToySigner:
    def __init__(self, cover_query: bool = True) -> None:
        self.key = secrets.token_bytes(32)
        self.cover_query = cover_query

    def has_role(self, role: str) -> bool:
        return role == "node"

    def identity(self, role: str = "node") -> AgentIdentity:
        return AgentIdentity(sub="darkmesh-node@toy", iss="toy", thumbprint="toy",
                             public_jwk={})

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: str = "darkmesh") -> httpx.Auth:
        return ToyAuth(self.key, self.identity(role).sub, self.cover_query)


class ToyVerifier:
    def __init__(self, signer: ToySigner) -> None:
        self.signer = signer

    def ready(self) -> bool:
        return True

    async def verify(self, request: InboundRequest, *, authorities: Sequence[str],
                     remember_once: Any) -> VerifiedAgent:
        signature = request.header("signature") or ""
        nonce = request.header("signature-input") or ""
        query = request.query if self.signer.cover_query else ""
        for authority in authorities:
            base = _toy_base(request.method, authority, request.raw_path, query,
                             request.body, nonce)
            expected = hmac.new(self.signer.key, base, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, signature):
                break
        else:
            raise VerificationFailed("signature_invalid", error="invalid_signature")
        if not await remember_once(signature, 60):
            raise VerificationFailed("replayed", error="invalid_signature")
        sub = request.header("signature-key") or ""
        return VerifiedAgent(sub=sub, iss="toy", thumbprint="toy", public_jwk={},
                             algorithm="hmac", label="toy", capabilities=frozenset({"*"}),
                             node_id="toy")

    def status(self) -> dict[str, Any]:
        return {}


class TestToySignerContract(SignerContract):
    @pytest.fixture
    def signer(self) -> ToySigner:
        return ToySigner()

    @pytest.fixture
    def verifier(self, signer: ToySigner) -> ToyVerifier:
        return ToyVerifier(signer)


def test_signer_contract_catches_a_signer_that_leaves_the_query_uncovered() -> None:
    signer = ToySigner(cover_query=False)

    class Unshrunk(SignerContract):
        # Finding the failure is the point; shrinking it to a minimal example is not.
        hypothesis_settings: ClassVar[dict[str, Any]] = {
            "phases": [Phase.explicit, Phase.reuse, Phase.generate]}

    contract = Unshrunk()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(AssertionError, match="query"):
            contract.test_signed_requests_verify_and_mutations_fail(
                signer, ToyVerifier(signer), "node", "node.example:8443", "https", loop)
    finally:
        loop.close()


def test_node_key_constant_is_what_make_host_configures() -> None:
    assert make_host().settings.node_key.get_secret_value() == TEST_NODE_KEY


def test_the_kit_registers_the_hypothesis_profile_these_suites_load() -> None:
    from hypothesis import HealthCheck, settings

    from sdl_core.testing import HYPOTHESIS_PROFILE

    profile = settings.get_profile(HYPOTHESIS_PROFILE)
    assert profile.deadline is None
    assert HealthCheck.too_slow in profile.suppress_health_check
    # pyproject's addopts pass --hypothesis-profile=darkmesh: it is the one in force here.
    assert settings.default.deadline is None
