"""Settings of the Redis relay backend: TOML table ``[redis]``, env ``DARKMESH_REDIS_*``."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from sdl_core import DarkmeshSettings

PLUGIN_NAME = "darkmesh-redis"
URL_SCHEMES = ("redis", "rediss", "unix")


class RedisSettings(DarkmeshSettings):
    """Where Redis is, how keys are named, how far streams may grow, how failures end."""

    section: ClassVar[str] = "redis"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_REDIS_", extra="ignore", populate_by_name=True
    )

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis server URL (redis://, rediss:// or unix://); a password in it is "
        "never logged",
    )
    password: SecretStr = Field(
        default=SecretStr(""), description="Redis password, when not given in the URL"
    )
    key_prefix: str = Field(
        default="darkmesh:",
        min_length=1,
        max_length=64,
        description="prefix of every key; relays sharing data must use the same one",
    )
    posts_max_len: int = Field(
        default=100_000, ge=10, description="most posts kept; the oldest go first beyond it"
    )
    mailbox_max_len: int = Field(
        default=10_000,
        ge=10,
        description="most unacked messages one mailbox holds; a send beyond it is refused "
        "(429)",
    )
    mailbox_retention_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="unacked mailbox messages older than this are dropped",
    )
    events_max_len: int = Field(
        default=10_000,
        ge=100,
        description="length of the wake-up stream relay processes watch (approximate cap)",
    )
    presence_retention_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="how long a node's last pull is remembered for live_nodes (must exceed the "
        "relay's live window)",
    )
    socket_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="read/write timeout of one Redis command"
    )
    connect_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="timeout of one connection attempt"
    )
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="attempts per operation when Redis drops; then the request fails with 503",
    )
    retry_backoff_seconds: float = Field(
        default=0.1, ge=0, le=5, description="pause before the first retry, doubled after each"
    )
    max_connections: int = Field(
        default=64, ge=2, le=10_000, description="connection pool size per relay process"
    )
    purge_interval_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="how often expired posts and old data are trimmed"
    )
    recheck_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="a waiting long-poll re-reads Redis at least this often (safety net for "
        "missed wake-ups)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        scheme = urlsplit(value).scheme
        if scheme not in URL_SCHEMES:
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in URL_SCHEMES)}"
            )
        return value


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + host).geturl()


def settings_table() -> str:
    """The README's settings table, generated from the model (a test keeps them equal)."""
    rows = [
        "| variable | `[redis]` key | default | description |",
        "|---|---|---|---|",
    ]
    for name, info in RedisSettings.model_fields.items():
        default = '""' if isinstance(info.default, SecretStr) else f"{info.default}"
        rows.append(
            f"| `DARKMESH_REDIS_{name.upper()}` | `{name}` | `{default}` | {info.description} |"
        )
    return "\n".join(rows)
