"""Settings: one pydantic-settings model for the node, one for the relay, one per plugin.

Sources, highest first: explicit values (CLI flags, tests) > environment > settings
file > defaults. The file is ``--config PATH``, else ``DARKMESH_CONFIG``, else
``./darkmesh.toml``; TOML tables ``[node]``, ``[relay]`` and one per plugin feature.
A ``.json`` file is read as an upstream node config (:mod:`sdl_core.upstream`).
"""

from __future__ import annotations

import contextvars
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sdl_core.errors import ConfigError, PluginSettingsError

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

#: The tables of the active settings file, read by :class:`FileTableSource`.
_FILE_TABLES: contextvars.ContextVar[Mapping[str, Mapping[str, Any]]] = contextvars.ContextVar(
    "darkmesh_file_tables", default=MappingProxyType({})
)


class FileTableSource(PydanticBaseSettingsSource):
    """Values of the model's table in the active settings file (below the environment)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        table = _FILE_TABLES.get().get(getattr(self.settings_cls, "section", ""), {})
        return table.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        section = getattr(self.settings_cls, "section", "")
        table = dict(_FILE_TABLES.get().get(section, {}))
        known = set(self.settings_cls.model_fields)
        return {k: v for k, v in table.items() if k in known}


class DarkmeshSettings(BaseSettings):
    """Base of every Darkmesh settings model. ``section`` is its TOML table name."""

    section: ClassVar[str] = ""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileTableSource(settings_cls), file_secret_settings)


class PeerConfig(BaseModel):
    """A v1 peer the operator configured: shared keys go only to these URLs."""

    node_id: str = Field(pattern=NODE_ID_PATTERN, description="the peer's node id")
    url: str = Field(description="the peer's base URL (http or https)")
    auth: Literal["auto", "hmac", "aauth"] = Field(
        default="auto", description="how to authenticate calls to this peer"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


AuthModeSetting = Literal["hmac", "aauth", "either"]


class NodeSettings(DarkmeshSettings):
    """The node: identity, data, relay and authentication."""

    section: ClassVar[str] = "node"
    model_config = SettingsConfigDict(env_prefix="DARKMESH_", extra="ignore", populate_by_name=True)

    node_id: str = Field(pattern=NODE_ID_PATTERN, description="this node's id (node_a)")
    host: str = Field(default="127.0.0.1", description="address the node binds to")
    port: int = Field(default=8001, ge=1, le=65535, description="port the node listens on")
    listen_url: str = Field(
        default="", description="public base URL of the node (default http://localhost:<port>)"
    )
    pseudonym_id: str = Field(default="", description="pseudonym shown on the node card only")
    self_identifiers: list[str] = Field(
        default_factory=list, description="the operator's own identifiers (emails)"
    )
    capabilities: list[str] | None = Field(
        default=None, description="templates served (default: every template of installed skills)"
    )
    required_integrations: list[str] = Field(
        default_factory=lambda: ["contacts", "interactions"],
        description="datasets that must have records for the node to be ready",
    )
    relay_url: str = Field(default="", description="relay base URL")
    relay_key: SecretStr = Field(default=SecretStr(""), description="shared relay secret (hmac)")
    node_key: SecretStr = Field(
        default=SecretStr(""), description="operator shared secret: ingest, request, status"
    )
    peer_key: SecretStr = Field(
        default=SecretStr(""), description="shared secret v1 peers use for inbox and reveal"
    )
    auth_mode: AuthModeSetting = Field(
        default="either",
        validation_alias=AliasChoices("auth_mode", "DARKMESH_AUTH_MODE"),
        description="inbound and outbound auth: hmac | aauth | either",
    )
    relay_outbound_auth: Literal["auto", "hmac", "aauth"] = Field(
        default="auto",
        validation_alias=AliasChoices("relay_outbound_auth", "DARKMESH_RELAY_OUTBOUND_AUTH"),
        description="per-destination override for calls to the relay",
    )
    peers: list[PeerConfig] = Field(default_factory=list, description="configured v1 peers")
    store: str = Field(default="vault", description="store plugin holding the datasets")
    transport: str = Field(default="http", description="transport plugin for outbound calls")
    data_dir: Path = Field(default=Path("data"), description="directory of the node database")
    vault_key_file: Path | None = Field(
        default=None,
        description="vault key file, mode 0600 (default keys/<node_id>.vault.key, "
        "outside data_dir)",
    )
    vault_passphrase: SecretStr = Field(
        default=SecretStr(""), description="derive the vault key from this passphrase (scrypt)"
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="largest request body accepted"
    )
    ingest_max_records: int = Field(
        default=50_000, ge=1, description="most records accepted by one /darkmesh/ingest call"
    )
    listener: bool = Field(default=True, description="run the relay listener in the node")
    listener_wait_seconds: float = Field(
        default=20.0, ge=0, le=30, description="long-poll wait of the listener's pulls"
    )
    event_budget_seconds: float = Field(
        default=2.0, gt=0, le=30, description="time budget of event subscribers"
    )
    dashboard_secret: SecretStr = Field(
        default=SecretStr(""), description="operator session secret for /darkmesh/ui"
    )
    dashboard_loopback_only: bool = Field(
        default=True,
        description="refuse /darkmesh/ui to non-loopback clients unless dashboard_secret is set",
    )
    dashboard_session_ttl_seconds: float = Field(
        default=12 * 3600.0, gt=0, le=30 * 86400,
        description="lifetime of a dashboard login session",
    )
    mcp_allow_approve: bool = Field(
        default=False,
        description="let `darkmesh mcp` expose the approve/decline tools to agents",
    )
    log_format: Literal["json", "text"] = Field(default="json", description="log line format")

    @model_validator(mode="after")
    def _defaults(self) -> NodeSettings:
        if not self.listen_url:
            self.listen_url = f"http://localhost:{self.port}"
        self.listen_url = self.listen_url.rstrip("/")
        self.relay_url = self.relay_url.strip().rstrip("/")
        self.self_identifiers = [s.strip().lower() for s in self.self_identifiers if s.strip()]
        if self.vault_key_file is None:
            self.vault_key_file = Path("keys") / f"{self.node_id}.vault.key"
        return self


class RelaySettings(DarkmeshSettings):
    """The relay: bind address, backend, authentication and caps."""

    section: ClassVar[str] = "relay"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_RELAY_", extra="ignore", populate_by_name=True
    )

    host: str = Field(default="127.0.0.1", description="address the relay binds to")
    port: int = Field(default=9000, ge=1, le=65535, description="port the relay listens on")
    public_url: str = Field(default="", description="public base URL (default http://localhost:<port>)")
    key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("key", "relay_key", "DARKMESH_RELAY_KEY"),
        description="shared relay secret (hmac)",
    )
    auth_mode: AuthModeSetting = Field(default="either", description="hmac | aauth | either")
    backend: str = Field(default="sqlite", description="relay backend plugin")
    data_dir: Path = Field(
        default=Path("relay-data"), description="directory of the sqlite backend"
    )
    max_message_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="largest post or mailbox message"
    )
    max_body_bytes: int = Field(
        default=3 * 1024 * 1024, ge=1024, description="largest request body accepted"
    )
    live_window_seconds: float = Field(
        default=60.0, gt=0, description="a node seen this recently counts as live"
    )
    max_wait_seconds: float = Field(default=30.0, ge=0, le=30, description="longest long-poll")

    @model_validator(mode="after")
    def _defaults(self) -> RelaySettings:
        if not self.public_url:
            self.public_url = f"http://localhost:{self.port}"
        self.public_url = self.public_url.rstrip("/")
        return self


# ------------------------------------------------------------------------- files


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The settings file in force: flag, else ``DARKMESH_CONFIG``, else ./darkmesh.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("DARKMESH_CONFIG")
    if env:
        return Path(env)
    default = Path("darkmesh.toml")
    return default if default.exists() else None


def read_config_file(path: Path | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Read a TOML file, or an upstream JSON node config; return (tables, warnings)."""
    if path is None:
        return {}, []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from exc
    if path.suffix.lower() == ".json":
        from sdl_core.upstream import tables_from_upstream_json

        return tables_from_upstream_json(raw, source=str(path))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from exc
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    return tables, []


@contextmanager
def file_tables(tables: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    token = _FILE_TABLES.set(tables)
    try:
        yield
    finally:
        _FILE_TABLES.reset(token)


def env_name(model: type[BaseSettings], field_name: str) -> str:
    """The environment variable that sets ``field_name`` of ``model``."""
    info = model.model_fields[field_name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice.isupper():
                return choice
    prefix = str(model.model_config.get("env_prefix", ""))
    return f"{prefix}{field_name}".upper()


def describe_validation_error(model: type[BaseSettings], exc: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable and the TOML key."""
    section = getattr(model, "section", "")
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ("?",)
        field_name = str(loc[0])
        if field_name in model.model_fields:
            where = f"{env_name(model, field_name)} ([{section}] {field_name})"
            desc = model.model_fields[field_name].description
            detail = f" ({desc})" if desc else ""
        else:
            where, detail = field_name, ""
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            lines.append(f"{where} is required{detail}")
        else:
            lines.append(f"{where}: {msg}{detail}")
    return lines


def load_settings(
    model: type[DarkmeshSettings | BaseSettings],
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    plugin: str = "darkmesh-sdl",
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Validate ``model`` from overrides, environment and file tables.

    :raises PluginSettingsError: naming the plugin and each variable.
    """
    with file_tables(tables or {}):
        try:
            return model(**{k: v for k, v in (overrides or {}).items() if v is not None})
        except ValidationError as exc:
            raise PluginSettingsError(
                plugin, describe_validation_error(model, exc), disable_hint=plugin != "darkmesh-sdl"
            ) from exc


#: What a secret value shows as wherever settings are displayed or logged.
REDACTED = "**********"


def plain_value(value: Any) -> Any:
    """One settings value as JSON, every ``SecretStr`` in it shown as ``REDACTED`` (or '')."""
    if isinstance(value, SecretStr):
        return REDACTED if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return value


def redacted(settings: BaseSettings) -> dict[str, Any]:
    """Settings as JSON with every ``SecretStr`` shown as ``'**********'`` (or '')."""
    return {name: plain_value(getattr(settings, name)) for name in type(settings).model_fields}
