"""``NeotomaSettings``: the ``[neotoma]`` table, ``DARKMESH_NEOTOMA_*`` variables.

Upstream names are accepted too: ``NEOTOMA_URL``, ``NEOTOMA_TOKEN`` and
``NEOTOMA_READ_AUTH_MODE`` (environment), and ``neotoma_<x>`` keys of an upstream JSON
node config, which the core's loader maps to ``<x>`` in this table.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from sdl_core import DarkmeshSettings

ReadAuthMode = Literal["auto", "bearer", "aauth"]


class GrantCapability(BaseModel):
    """One ``agent_grant`` capability entry (``{"op", "entity_types"}``)."""

    op: str = Field(description="the operation, e.g. retrieve or store_structured")
    entity_types: list[str] = Field(min_length=1, description="entity types, or '*'")


def default_capabilities() -> list[GrantCapability]:
    """What Darkmesh needs: read contacts and reveals, write reveals (§5)."""
    return [
        GrantCapability(op="retrieve", entity_types=["contact", "warm_intro_reveal"]),
        GrantCapability(op="store_structured", entity_types=["warm_intro_reveal"]),
    ]


class NeotomaSettings(DarkmeshSettings):
    """Where Neotoma is, how to read from it, and what the writeback does."""

    section: ClassVar[str] = "neotoma"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_NEOTOMA_", extra="ignore", populate_by_name=True
    )

    url: str = Field(
        default="http://localhost:3080",
        validation_alias=AliasChoices("url", "DARKMESH_NEOTOMA_URL", "NEOTOMA_URL"),
        description="Neotoma server URL",
    )
    token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("token", "DARKMESH_NEOTOMA_TOKEN", "NEOTOMA_TOKEN"),
        description="Neotoma Bearer token (user session: reads in bearer mode, grant calls)",
    )
    read_auth_mode: ReadAuthMode = Field(
        default="auto",
        validation_alias=AliasChoices(
            "read_auth_mode", "DARKMESH_NEOTOMA_READ_AUTH_MODE", "NEOTOMA_READ_AUTH_MODE"
        ),
        description="how reads authenticate: bearer | aauth | auto (aauth once admitted, "
        "else bearer when a token is set, else aauth when a signer is installed)",
    )
    authority: str = Field(
        default="",
        description="the @authority Neotoma verifies (default: issuer of its "
        "/.well-known/aauth-resource.json, else localhost:<port>)",
    )
    entity_type: str = Field(default="contact", description="entity type holding contacts")
    max_entities: int = Field(
        default=2000, ge=1, le=100_000, description="most entities read from Neotoma"
    )
    page_size: int = Field(
        default=500, ge=1, le=500, description="entities per page (Neotoma caps it at 500)"
    )
    cache_ttl_seconds: float = Field(
        default=15.0, ge=0, description="live-store cache lifetime (0 disables the cache)"
    )
    read_timeout_seconds: float = Field(default=15.0, gt=0, description="timeout of reads")
    connector_timeout_seconds: float = Field(
        default=20.0, gt=0, description="timeout of the sync connector's calls"
    )
    writeback_timeout_seconds: float = Field(
        default=10.0, gt=0, description="timeout of one writeback attempt"
    )
    probe_timeout_seconds: float = Field(
        default=5.0, gt=0, description="timeout of the start-up /session probe"
    )
    retry_after_seconds: float = Field(
        default=5.0, gt=0, description="after a failed read, serve the fallback this long "
        "before trying Neotoma again"
    )
    writeback: bool = Field(
        default=True, description="write a warm_intro_reveal per approved reveal (needs a signer)"
    )
    outbox_initial_backoff_seconds: float = Field(
        default=2.0, gt=0, description="first retry delay of the writeback outbox"
    )
    outbox_max_backoff_seconds: float = Field(
        default=300.0, gt=0, description="longest retry delay of the writeback outbox"
    )
    grant_label: str = Field(
        default="",
        description="label of the provisioned agent_grant (default 'Darkmesh node <sub>')",
    )
    grant_capabilities: list[GrantCapability] = Field(
        default_factory=default_capabilities,
        description="capabilities of the provisioned agent_grant",
    )
    grant_settle_seconds: float = Field(
        default=5.5, gt=5.0, description="wait after a grant write before probing (Neotoma "
        "caches admission for 5 s)"
    )
    fallback_store: str = Field(
        default="vault", description="store serving writes, and reads while Neotoma is down"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        return authority_of(value) if value else ""

    def bearer(self) -> str:
        """The Bearer token, or '' when none is configured."""
        return self.token.get_secret_value().strip()


def authority_of(value: str) -> str:
    """``host[:port]`` of a URL or authority, lower-cased, default ports dropped."""
    text = value.strip()
    scheme = ""
    if "://" in text:
        scheme, text = text.split("://", 1)
    text = text.split("/", 1)[0].lower()
    if (scheme == "http" and text.endswith(":80")) or (scheme == "https" and text.endswith(":443")):
        text = text.rsplit(":", 1)[0]
    return text
