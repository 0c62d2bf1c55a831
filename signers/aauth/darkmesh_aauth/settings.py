"""``AAuthSettings``: every setting of ``darkmesh-aauth`` (``aauth.md`` §5.1).

Environment ``DARKMESH_AAUTH_<FIELD>``, TOML table ``[aauth]``. The upstream names that live
outside the prefix (``DARKMESH_TRUSTED_AGENTS_FILE``, ``DARKMESH_RELAY_TRUSTED_AGENTS_FILE``,
``DARKMESH_RELAY_AAUTH_AUTHORITIES``, ``DARKMESH_OPERATOR``) are aliases on this model, which
owns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from darkmesh_aauth.registry import DEFAULT_ISS
from sdl_core import DarkmeshSettings

#: Most authorities a node or relay may accept (``aauth.md`` §2.1).
MAX_AUTHORITIES = 4


def _split_list(value: object) -> object:
    """Accept ``a,b,c`` strings (environment) as well as lists (TOML)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AAuthSettings(DarkmeshSettings):
    """Keys, identities, trust registries and verifier limits of ``darkmesh-aauth``."""

    section: ClassVar[str] = "aauth"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_AAUTH_", extra="ignore", populate_by_name=True
    )

    # -- the node's own identity -------------------------------------------------
    private_jwk: SecretStr = Field(
        default=SecretStr(""),
        description="the node's private JWK as JSON (or use private_jwk_path, not both)",
    )
    private_jwk_path: Path | None = Field(
        default=None,
        description="file holding the node's private JWK, mode 0600 (from `darkmesh keygen`)",
    )
    sub: str = Field(
        default="", description="the node's agent id (default darkmesh-node@<node_id>)"
    )
    iss: str = Field(
        default=DEFAULT_ISS, description="issuer written into agent tokens"
    )
    kid: str = Field(
        default="", description="JWS kid of agent tokens (default: the key file's kid, else "
        "the thumbprint)"
    )
    token_ttl_sec: int = Field(
        default=300, ge=30, le=86400, description="lifetime of agent tokens, in seconds"
    )
    key_dir: Path | None = Field(
        default=None,
        description="directory of key files (default keys/ beside the settings file)",
    )
    send_keyid: bool = Field(
        default=True,
        description="send keyid (the thumbprint) in Signature-Input; upstream verifiers need it",
    )

    # -- operator and connector identities ----------------------------------------
    operator_private_jwk_path: Path | None = Field(
        default=None,
        description="private JWK of the operator CLI (default <key_dir>/operator.private.jwk)",
    )
    operator: str = Field(
        default="",
        validation_alias=AliasChoices("operator", "DARKMESH_OPERATOR"),
        description="operator tag of connector subs when no node_id is configured",
    )
    connector_private_jwk_path: Path | None = Field(
        default=None,
        description="private JWK of a connector (default <key_dir>/connector-<name>.private.jwk)",
    )
    connector_sub: str = Field(
        default="", description="a connector's agent id (default connector-<name>@<operator>)"
    )
    connector_iss: str = Field(
        default="", description="issuer of a connector's tokens (default: iss)"
    )

    # -- the verifier ---------------------------------------------------------------
    trusted_agents_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("trusted_agents_file", "DARKMESH_TRUSTED_AGENTS_FILE"),
        description="trust registry of the node (JSON, hot-reloaded)",
    )
    relay_trusted_agents_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "relay_trusted_agents_file", "DARKMESH_RELAY_TRUSTED_AGENTS_FILE"
        ),
        description="trust registry of the relay (default: trusted_agents_file)",
    )
    # NoDecode: the environment gives `a,b` (split below), not JSON.
    authorities: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="host[:port] values a node accepts as @authority, comma-separated, "
        "at most 4 (default: from listen_url)",
    )
    relay_authorities: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("relay_authorities", "DARKMESH_RELAY_AAUTH_AUTHORITIES"),
        description="host[:port] values a relay accepts as @authority, at most 4 "
        "(default: from public_url)",
    )
    signature_window_sec: int = Field(
        default=60, ge=1, le=600,
        description="allowed clock skew of created/iat/exp, and the life of replay entries",
    )
    accept_upstream_tokens: bool = Field(
        default=False,
        description="accept upstream v1 tokens: jti may be absent, alg-less EC keys are ES256",
    )
    replay_cache_max_entries: int = Field(
        default=1_000_000, ge=1,
        description="live replay-cache entries before signed requests get 503",
    )

    @field_validator("authorities", "relay_authorities", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("authorities", "relay_authorities")
    @classmethod
    def _at_most_four(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_AUTHORITIES:
            raise ValueError(f"at most {MAX_AUTHORITIES} authorities (got {len(value)})")
        return value

    @field_validator("private_jwk_path", "operator_private_jwk_path",
                     "connector_private_jwk_path", "trusted_agents_file",
                     "relay_trusted_agents_file", "key_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_key_source(self) -> AAuthSettings:
        if self.private_jwk.get_secret_value().strip() and self.private_jwk_path is not None:
            raise ValueError(
                "set DARKMESH_AAUTH_PRIVATE_JWK or DARKMESH_AAUTH_PRIVATE_JWK_PATH, not both"
            )
        return self

    def resolved_key_dir(self) -> Path:
        """``key_dir``, else ``./keys``. Callers with a runtime apply
        :func:`darkmesh_aauth.runtime.with_key_dir` first, which puts it beside the settings
        file the runtime read (the core's rule: ``--config``, ``DARKMESH_CONFIG``, then
        ``./darkmesh.toml``)."""
        return self.key_dir if self.key_dir is not None else Path("keys")
