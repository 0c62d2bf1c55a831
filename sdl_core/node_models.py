"""Wire models of the node's core routes (``wire-v1.md`` §3.1–3.5, plus plugins/metrics).

The ingest handler validates its body with :class:`IngestRequest`; the other models
document response shapes for ``contracts/`` (the handlers build plain dicts in the same
shape, and ``tests/core/test_node_app.py`` validates responses against these models).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class ErrorResponse(BaseModel):
    """Every error: ``detail`` is a string, or FastAPI's list shape on 422."""

    detail: str | list[dict[str, Any]]
    reason: str | None = Field(default=None, description="stable reason code, when one applies")


class HealthResponse(BaseModel):
    """``GET /darkmesh/health`` (public)."""

    status: str = Field(description="always 'ok'")
    node_id: str


class CapabilitiesResponse(BaseModel):
    """``GET /darkmesh/capabilities``: the templates this node serves."""

    node_id: str
    capabilities: list[str]


class NodeCard(BaseModel):
    """``GET /darkmesh/node/card``."""

    node_id: str
    pseudonym_id: str = Field(description="node-card pseudonym (defaults to node_id)")
    url: str = Field(description="the node's listen_url")
    capabilities: list[str]
    relay_url: str = Field(description="'' when unset")


class IntegrationStatus(BaseModel):
    name: str = Field(description="a dataset from required_integrations")
    records: int = Field(ge=0)
    ready: bool = Field(description="records > 0")


class IntegrationsStatusResponse(BaseModel):
    """``GET /darkmesh/integrations/status``; ``plugins`` holds each plugin's status()."""

    node_id: str
    ready: bool = Field(description="every required integration is ready")
    required_integrations: list[IntegrationStatus]
    plugins: dict[str, Any] = Field(default_factory=dict)


class IngestRequest(BaseModel):
    """``POST /darkmesh/ingest``. Unknown fields are ignored (``wire-v1.md`` §0)."""

    model_config = ConfigDict(extra="ignore")

    dataset: StrictStr = Field(description="a dataset declared by the core or a skill")
    records: list[dict[str, Any]] = Field(description="JSON objects; strengths clamped to [0,1]")


class IngestResponse(BaseModel):
    dataset: str
    count: int = Field(ge=0, description="TOTAL records in the dataset after the upsert")


class PluginEntry(BaseModel):
    name: str = Field(description="entry-point (distribution) name")
    distribution: str | None
    version: str | None
    builtin: bool
    module: str
    hooks: list[str]
    specs: dict[str, list[str]] = Field(description="spec names this plugin registered, by kind")


class PluginsResponse(BaseModel):
    """``GET /darkmesh/plugins``."""

    node_id: str
    plugins: list[PluginEntry]
    specs: dict[str, list[str]] = Field(description="every registered spec name, by kind")


CORE_NODE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    HealthResponse,
    CapabilitiesResponse,
    NodeCard,
    IntegrationStatus,
    IntegrationsStatusResponse,
    IngestRequest,
    IngestResponse,
    PluginEntry,
    PluginsResponse,
)
