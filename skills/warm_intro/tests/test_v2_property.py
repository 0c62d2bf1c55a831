"""Property: over the whole v2 flow (post, sealed replies, scoring), the requester finds
exactly the responders whose identity is among its contacts, and nothing else."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from darkmesh_warm_intro.matching import Target
from darkmesh_warm_intro.models import ConstraintsModel
from darkmesh_warm_intro.testing import LoopbackMesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UNIVERSE = [f"u{i}@people.example" for i in range(12)]


async def _run(contacts: list[int], responders: list[list[int]]) -> tuple[set[float], int]:
    with tempfile.TemporaryDirectory() as tmp:
        mesh = LoopbackMesh(Path(tmp))
        a = await mesh.add_node("node_a", contacts=[
            {"name": f"c{i}", "email": UNIVERSE[i], "org": "Elsewhere", "role": "Friend",
             "strength": round(0.5 + i / 40, 3)} for i in contacts])
        for n, identities in enumerate(responders):
            await mesh.add_node(f"node_{n}", self_identifiers=[UNIVERSE[i] for i in identities],
                                contacts=[{"name": f"t{n}", "email": f"t{n}@x.example",
                                           "org": "Company X", "role": "BD", "strength": 1.0}],
                                warm_intro={"budget_requests": 1000})
        started = await a.skill.v2.requester.start(Target.from_json({"company": "Company X"}),
                                                   ConstraintsModel(max_candidates=10,
                                                                    min_strength=0.0))
        answer = await a.skill.v2.requester.wait(started["request_id"])
        await mesh.close()
        return {c["score"] for c in answer["candidates"]}, len(answer["candidates"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contacts=st.lists(st.integers(0, 11), min_size=1, max_size=8, unique=True),
       responders=st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=2, unique=True),
                           min_size=1, max_size=3))
def test_candidates_are_exactly_the_connected_responders(contacts: list[int],
                                                         responders: list[list[int]]) -> None:
    scores, count = asyncio.run(_run(contacts, responders))
    known = set(contacts)
    connected = [ids for ids in responders if known & set(ids)]
    assert count == len(connected)
    # each connected responder scores 0.6 * (strength of one shared contact) + 0.4 * 1.0
    possible = {round(0.6 * round(0.5 + i / 40, 3) + 0.4, 3) for ids in connected
                for i in known & set(ids)}
    assert scores <= possible
