"""The stand-in's error envelope: ``{"error_code","message","details"?,"timestamp"}``."""

from __future__ import annotations

from typing import Any


class StandinError(Exception):
    """An error answer. ``envelope="error"`` gives the idempotency-mismatch shape
    ``{"error": {"code", "message", "hint"}}`` (§2.4)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        envelope: str = "standard",
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.envelope = envelope
        self.hint = hint
        super().__init__(f"{status} {code}: {message}")

    def body(self, timestamp: str) -> dict[str, Any]:
        if self.envelope == "error":
            inner: dict[str, Any] = {"code": self.code, "message": self.message}
            if self.hint:
                inner["hint"] = self.hint
            return {"error": inner}
        out: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        out["timestamp"] = timestamp
        return out
