"""Structured logs for node and relay processes, and the request-id middleware.

One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, ``request_id`` and
any ``extra=`` fields. Secrets never reach the output: :class:`SecretScrubber` replaces
every registered secret value (the shared keys of the loaded settings, registered by
:func:`configure_logging`) wherever it appears, and a ``SecretStr`` passed as an extra
is rendered by pydantic as ``**********``. Request headers, which carry keys and
signatures, are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdl_core.settings import REDACTED

__all__ = [
    "REQUEST_ID_HEADER",
    "JSONFormatter",
    "RequestIdMiddleware",
    "SecretScrubber",
    "configure_logging",
    "current_request_id",
    "secret_values",
]

REQUEST_ID_HEADER = "x-request-id"

#: An incoming id is kept only if it is short and made of safe characters, so a caller
#: cannot inject newlines or huge values into every log line.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "darkmesh_request_id", default=None
)

#: Attributes every ``LogRecord`` has; anything else came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)



def current_request_id() -> str | None:
    """The id of the request being served in this task, if any."""
    return _request_id.get()


def secret_values(*models: BaseModel) -> list[str]:
    """Every non-empty ``SecretStr`` value held by ``models`` (nested models included)."""
    found: list[str] = []
    for model in models:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
            elif isinstance(value, BaseModel):
                found.extend(secret_values(value))
    return found


class SecretScrubber(logging.Filter):
    """Replaces every registered secret value in a record's message and extras."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()  # longest first: a secret may contain another
        self.add(secret_values)

    def add(self, secret_values: Iterable[str]) -> None:
        # Very short values would redact ordinary words; a real key is never that short.
        fresh = {v for v in secret_values if v and len(v) >= 4}
        self._secrets = tuple(sorted(fresh.union(self._secrets), key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for value in self._secrets:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            for key, value in list(vars(record).items()):
                if key not in _RECORD_ATTRS and isinstance(value, str):
                    setattr(record, key, self.scrub(value))
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED if value.get_secret_value() else ""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = _jsonable(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = current_request_id()
        prefix = f"[{rid}] " if rid else ""
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {prefix}"
        text = base + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_HANDLER_NAME = "darkmesh"


class _ScrubbingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Scrubs the finished line too: tracebacks and reprs are built after the filter."""

    def __init__(self, stream: Any, scrubber: SecretScrubber) -> None:
        super().__init__(stream)
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        return self.scrubber.scrub(super().format(record))


def configure_logging(
    format: Literal["json", "text"] = "json",
    level: str | int = "INFO",
    *,
    secrets: Iterable[str | SecretStr] = (),
    stream: Any = None,
) -> logging.Handler:
    """Install one handler on the ``darkmesh`` logger tree (replacing an earlier one).

    :param format: ``json`` (one object per line) or ``text``.
    :param level: a level name or number.
    :param secrets: values that must never appear in a log line (shared keys).
    :param stream: where to write (default ``sys.stderr``).
    :returns: the installed handler.
    """
    if format not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {format!r}")
    values = [s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets]
    scrubber = SecretScrubber(values)
    handler = _ScrubbingHandler(stream or sys.stderr, scrubber)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if format == "json" else _TextFormatter())
    handler.addFilter(scrubber)
    root = logging.getLogger("darkmesh")
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler


access_log = logging.getLogger("darkmesh.access")


class RequestIdMiddleware:
    """Pure ASGI middleware: a request id per HTTP request, echoed as ``X-Request-Id``.

    An incoming ``X-Request-Id`` is kept when it is sane (1–128 of ``[A-Za-z0-9._:-]``),
    else a fresh random id is generated. One access-log line per request names method,
    path (never the query, which may carry tokens), status and duration.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", ()):
            if name.lower() == REQUEST_ID_HEADER.encode():
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else token_hex(8)
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", [])
                    if k.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s", scope.get("method", ""), scope.get("path", ""), status,
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            _request_id.reset(token)
