"""``SkillContract``: what every skill must hold, whatever it does.

Subclass it in your plugin's tests and supply the ``skill_spec`` fixture::

    from sdl_core.testing.skill_contract import SkillContract

    class TestOfficeHours(SkillContract):
        @pytest.fixture
        def skill_spec(self):
            (spec,) = plugin.darkmesh_register_skills()
            return spec

Fixtures:

``skill_spec`` (required)
    The :class:`sdl_core.SkillSpec` under test, as the plugin registers it.

``skill_tables`` (optional, default ``{}``)
    Settings-file tables (``{"office_hours": {...}}``) for a skill whose settings model
    has required fields.

``skill_node_overrides`` (optional, default ``{}``)
    Extra node settings for :func:`sdl_core.testing.host.make_host`.

``skill_plugins`` (optional, default ``()``)
    Further temporary plugin objects the skill needs on the host (e.g. a fake signer).

Checks: the spec name is kebab-case and templates/datasets are well-formed; the skill
builds; every route declares a capability the host knows (the node app refuses to start
otherwise); the routes answer hostile bodies with 2xx/4xx JSON (or a 503 with its reason),
never another 5xx;
``handle_post`` and ``handle_mailbox`` tolerate hostile input without raising;
``status()`` is JSON-serialisable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core.auth import is_peer_route
from sdl_core.host import Host
from sdl_core.plugins import hookimpl
from sdl_core.protocols import MailboxMessage
from sdl_core.specs import OPERATOR_SESSION, PUBLIC, SkillSpec
from sdl_core.testing.host import TEST_NODE_KEY, TEST_PEER_KEY, make_host

__all__ = ["SkillContract", "hostile_json", "hostile_posts"]

SPEC_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[a-z]+)?\}")

hostile_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=20,
)


def hostile_posts(templates: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Relay posts: random objects, some shaped like real posts for the skill's templates."""
    template = st.sampled_from(list(templates) or ["unknown_template"]) | st.text(max_size=20)
    shaped = st.fixed_dictionaries(
        {"template": template, "post_id": st.text(max_size=16) | st.integers(),
         "requester_id": st.text(max_size=16) | st.none(), "payload": hostile_json,
         "seq": st.integers() | st.text(max_size=4)},
        optional={"target": hostile_json, "x_values": st.lists(st.text(max_size=70), max_size=8),
                  "created_at": st.floats(allow_nan=False) | st.text(max_size=4)},
    )
    return shaped | st.dictionaries(st.text(max_size=12), hostile_json, max_size=6)


def _mailbox_messages() -> st.SearchStrategy[MailboxMessage]:
    payload = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()) | st.text(
        max_size=40)
    return st.builds(
        MailboxMessage, id=st.text(min_size=1, max_size=12), to=st.text(max_size=12),
        sender=st.text(max_size=12), sender_verified=st.booleans(),
        request_id=st.text(max_size=16), payload=payload,
        created_at=st.floats(allow_nan=False, allow_infinity=False),
    )


def _fill(path: str) -> str:
    return PATH_PARAM.sub("abc12345", path)


class SkillContract:
    """The suite. Subclass it and provide a ``skill_spec`` fixture."""

    @pytest.fixture
    def skill_tables(self) -> Mapping[str, Mapping[str, Any]]:
        return {}

    @pytest.fixture
    def skill_node_overrides(self) -> Mapping[str, Any]:
        return {}

    @pytest.fixture
    def skill_plugins(self) -> Sequence[object]:
        return ()

    @pytest.fixture
    def skill_host(
        self, skill_spec: SkillSpec, skill_tables: Mapping[str, Mapping[str, Any]],
        skill_node_overrides: Mapping[str, Any], skill_plugins: Sequence[object],
    ) -> Iterator[Host]:
        """An unstarted host with only this skill (and ``skill_plugins``) installed."""

        class ContractPlugin:
            __name__ = f"contract-{skill_spec.name}"

            @hookimpl
            def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
                yield skill_spec

        host = make_host(ContractPlugin(), *skill_plugins, tables=skill_tables,
                         **dict(skill_node_overrides))
        yield host
        if host.prepared or host.started:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(host.stop())
            finally:
                loop.close()

    # ------------------------------------------------------------------- tests

    def test_spec_names_are_well_formed(self, skill_spec: SkillSpec) -> None:
        assert isinstance(skill_spec, SkillSpec)
        assert SPEC_NAME.match(skill_spec.name), (
            f"skill name {skill_spec.name!r} must be kebab-case (warm-intro)")
        for template in skill_spec.templates:
            assert TEMPLATE_NAME.match(template), f"template {template!r} must be snake_case"
        assert len(set(skill_spec.templates)) == len(skill_spec.templates)
        for dataset in skill_spec.datasets:
            assert DATASET_NAME.match(dataset), f"dataset {dataset!r} must be snake_case"
        assert skill_spec.description, "describe the skill (darkmesh plugins shows it)"

    def test_every_route_declares_a_known_capability(self, skill_host: Host,
                                                     skill_spec: SkillSpec) -> None:
        from sdl_core.node_app import route_table

        table = route_table(skill_host)  # raises StartupError naming the route otherwise
        skill = skill_host.skills[skill_spec.name]
        assert len([m for m in table if m.owner == f"skill:{skill_spec.name}"]) == len(
            list(skill.routes()))
        for route in skill.routes():
            assert route.capability, f"{route.path} declares no capability"
            assert route.path == "" or route.path.startswith("/"), route.path

    def test_status_is_json_serialisable(self, skill_host: Host, skill_spec: SkillSpec) -> None:
        skill_host.prepare()
        status = skill_host.skills[skill_spec.name].status()
        assert isinstance(status, dict)
        json.dumps(status)

    def test_hostile_posts_and_mailbox_messages_never_raise(
        self, skill_host: Host, skill_spec: SkillSpec
    ) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(skill_host.start())
            skill = skill_host.skills[skill_spec.name]

            @settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
            @given(post=hostile_posts(skill_spec.templates), message=_mailbox_messages())
            def check(post: dict[str, Any], message: MailboxMessage) -> None:
                loop.run_until_complete(skill.handle_post(post))
                handled = loop.run_until_complete(skill.handle_mailbox(message))
                assert isinstance(handled, bool)

            check()
        finally:
            loop.run_until_complete(skill_host.stop())
            loop.close()

    def test_routes_answer_hostile_bodies_without_5xx(
        self, skill_host: Host, skill_spec: SkillSpec
    ) -> None:
        from sdl_core.node_app import create_node_app

        app = create_node_app(skill_host)
        routes = [(_fill(m.path), m.spec) for m in app.state.route_table
                  if m.owner == f"skill:{skill_spec.name}"
                  and m.spec.capability != OPERATOR_SESSION]
        if not routes:
            return
        loop = asyncio.new_event_loop()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://skill-contract")
        try:
            loop.run_until_complete(skill_host.start())

            @settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
            @given(index=st.integers(min_value=0, max_value=len(routes) - 1),
                   body=hostile_json | st.binary(max_size=64))
            def check(index: int, body: Any) -> None:
                path, spec = routes[index]
                headers = {"content-type": "application/json"}
                if spec.capability != PUBLIC:
                    headers["X-Darkmesh-Key"] = (
                        TEST_PEER_KEY if is_peer_route(spec) else TEST_NODE_KEY)
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                for method in spec.methods:
                    send = content if method.upper() not in ("GET", "HEAD", "DELETE") else None
                    response = loop.run_until_complete(
                        client.request(method, path, content=send, headers=headers))
                    # 503 with a reason is an honest "not configured/available"; any
                    # other 5xx means hostile input reached an unhandled error.
                    assert response.status_code < 500 or response.status_code == 503, (
                        f"{method} {path} answered {response.status_code}: {response.text[:200]}")
                    if response.status_code >= 400:
                        assert "detail" in response.json(), f"{method} {path}: no detail"
                    if response.status_code == 503:
                        assert response.json().get("reason"), f"{method} {path}: 503, no reason"

            check()
        finally:
            loop.run_until_complete(client.aclose())
            loop.run_until_complete(skill_host.stop())
            loop.close()
