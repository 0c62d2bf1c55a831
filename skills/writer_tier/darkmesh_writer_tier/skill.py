"""The writer-tier skill object: one peer route and one operator route."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from darkmesh_writer_tier.settings import WriterTierSettings
from darkmesh_writer_tier.tiers import DATASET, count_activity, tier_for
from sdl_core import (
    Host,
    HTTPProblem,
    JSONObject,
    MailboxMessage,
    RouteSpec,
    node_json,
    request_identity,
)

ASK_CAPABILITY = "writer_tier.ask"


class TierQuestion(BaseModel):
    """``POST /darkmesh/skills/writer-tier/ask``: what tier is ``writer`` in ``topic``?"""

    model_config = ConfigDict(extra="ignore")
    writer: str = Field(min_length=1, max_length=320, description="writer identifier")
    topic: str = Field(min_length=1, max_length=128, description="topic slug, e.g. ai-content")


class TierAnswer(BaseModel):
    """A tier and counts, with the ids of the observations used; never any body."""

    writer: str
    topic: str
    tier: str
    counts: dict[str, int]
    observation_ids: list[str]
    observation_ids_truncated: bool
    node_id: str
    computed_at: float


class WriterTierSkill:
    """Answers tier questions from the node's ``writer_activity`` dataset.

    The records are read from whatever store the node uses (the vault, or Neotoma's
    live store), through ``host.store`` only.
    """

    def __init__(self, host: Host, settings: WriterTierSettings) -> None:
        self.host = host
        self.settings = settings
        self.answered = 0
        self.asked_by: dict[str, int] = {}

    def routes(self) -> Sequence[RouteSpec]:
        return [
            RouteSpec(
                path="/ask",
                endpoint=self.ask,
                methods=("POST",),
                capability=ASK_CAPABILITY,
                name="writer-tier-ask",
                request_model=TierQuestion,
                response_model=TierAnswer,
                max_body_bytes=4096,
                peer_route=True,
                description="a peer asks for a writer's tier in a topic",
            ),
            RouteSpec(
                path="/tier",
                endpoint=self.local_tier,
                methods=("GET",),
                capability="node.query",
                name="writer-tier-local",
                response_model=TierAnswer,
                description="the operator looks up a tier (query: writer, topic)",
            ),
        ]

    async def answer(self, writer: str, topic: str) -> TierAnswer:
        records = [record async for record in self.host.store.iterate(DATASET)]
        counts = count_activity(records, writer, topic)
        cap = self.settings.max_observation_ids
        self.answered += 1
        return TierAnswer(
            writer=writer,
            topic=topic,
            tier=tier_for(counts, self.settings),
            counts=counts.to_json(),
            observation_ids=counts.observation_ids[:cap],
            observation_ids_truncated=len(counts.observation_ids) > cap,
            node_id=self.host.settings.node_id,
            computed_at=time.time(),
        )

    async def ask(self, request: Request) -> JSONResponse:
        question = TierQuestion.model_validate(node_json(request))
        caller = request_identity(request).sub or "shared-key"
        self.asked_by[caller] = self.asked_by.get(caller, 0) + 1
        answer = await self.answer(question.writer, question.topic)
        return JSONResponse(answer.model_dump())

    async def local_tier(self, request: Request) -> JSONResponse:
        writer = request.query_params.get("writer", "")
        topic = request.query_params.get("topic", "")
        if not writer.strip() or not topic.strip():
            raise HTTPProblem(400, "query parameters writer and topic are required")
        if len(writer) > 320 or len(topic) > 128:
            raise HTTPProblem(400, "writer (≤320) or topic (≤128) too long")
        answer = await self.answer(writer, topic)
        return JSONResponse(answer.model_dump())

    async def handle_post(self, post: JSONObject) -> None:
        """The skill serves no relay template; the listener never calls this."""

    async def handle_mailbox(self, message: MailboxMessage) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"answered": self.answered, "askers": len(self.asked_by)}
