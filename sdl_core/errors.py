"""Typed errors. Every message names the plugin, the setting or input, and the fix."""

from __future__ import annotations


class DarkmeshError(Exception):
    """Base class of every error the core raises on purpose."""


class PluginLoadError(DarkmeshError):
    """A plugin failed to import or register; start-up stops."""

    def __init__(self, plugin: str, cause: BaseException) -> None:
        self.plugin = plugin
        super().__init__(
            f"plugin {plugin!r} failed to load: {type(cause).__name__}: {cause}. "
            f"Fix or uninstall it, or start without it: DARKMESH_DISABLE_PLUGINS={plugin}"
        )


class PluginConflictError(DarkmeshError):
    """Two plugins registered a record of the same kind under the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(
            f"{kind} {name!r} is registered by both {first!r} and {second!r}; "
            f"disable one of them with DARKMESH_DISABLE_PLUGINS"
        )


class UnknownPluginError(DarkmeshError):
    """A setting selects a record that no installed plugin provides."""

    def __init__(self, kind: str, name: str, choices: list[str], setting: str = "") -> None:
        where = f" ({setting})" if setting else ""
        listed = ", ".join(sorted(choices)) or "none installed"
        super().__init__(f"{kind} {name!r}{where} is not installed; choose one of: {listed}")


class PluginSettingsError(DarkmeshError):
    """A plugin's settings failed validation."""

    def __init__(self, plugin: str, problems: list[str], disable_hint: bool = True) -> None:
        self.plugin = plugin
        self.problems = problems
        hint = (
            f" Set them, or start without the plugin: DARKMESH_DISABLE_PLUGINS={plugin}"
            if disable_hint
            else ""
        )
        super().__init__(f"{plugin}: " + "; ".join(problems) + "." + hint)


class ConfigError(DarkmeshError):
    """A settings file or value is unusable."""


class StartupError(DarkmeshError):
    """A process cannot start with the given configuration."""


class HTTPProblem(DarkmeshError):
    """An error that maps to an HTTP response ``{"detail": ..., "reason"?: ...}``."""

    def __init__(
        self,
        status: int,
        detail: object,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = headers or {}
        super().__init__(f"{status}: {detail}")


class VerificationFailed(HTTPProblem):
    """An inbound signature failed verification (401, with ``Signature-Error``)."""

    def __init__(self, reason: str, *, error: str, headers: dict[str, str] | None = None) -> None:
        merged = {"Signature-Error": f"error={error}", **(headers or {})}
        super().__init__(
            401, f"AAuth verification failed: {reason}", reason=reason, headers=merged
        )
        self.error = error


class RelayUnavailable(HTTPProblem):
    """The relay backend cannot serve right now (503 with a reason, never a hang)."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, f"relay backend unavailable: {reason}", reason="backend_unavailable")
