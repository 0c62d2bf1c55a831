"""The dashboard's calls to skills: through their documented HTTP routes, never their tables.

Calls go in-process to the node's own ASGI app (``httpx.ASGITransport``), authenticated
as the operator exactly as an outside client would be (:mod:`sdl_core.operator`), so the
auth guard, the capability check and the skill's validation all apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from sdl_core.errors import DarkmeshError
from sdl_core.operator import (
    OperatorCallError,
    OperatorCredential,
    operator_answer,
    operator_credential,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from sdl_core.host import Host

WARM_INTRO = "warm-intro"
SKILLS_PREFIX = "/darkmesh/skills"
CALL_TIMEOUT_SECONDS = 30.0


class NodeApiError(Exception):
    """A skill route answered an error, or could not be called; ``str()`` says which."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NodeApi:
    """Operator calls to one node's routes, in-process."""

    def __init__(self, host: Host, app: ASGIApp) -> None:
        self.host = host
        self.app = app
        self._credential: OperatorCredential | None = None

    def credential(self) -> OperatorCredential:
        """The operator's credential, made on first use (the signer exists by then)."""
        if self._credential is None:
            settings = self.host.settings
            try:
                self._credential = operator_credential(
                    base_url=settings.listen_url, auth_mode=settings.auth_mode,
                    node_key=settings.node_key.get_secret_value(), signer=self.host.signer,
                )
            except DarkmeshError as exc:
                raise NodeApiError(str(exc)) from None
        return self._credential

    def has_skill(self, name: str) -> bool:
        return name in self.host.skills

    def serves(self, method: str, path: str) -> bool:
        """Whether the node mounts ``method path`` exactly (feature detection by route)."""
        table = getattr(getattr(self.app, "state", None), "route_table", None) or []
        return any(m.path == path and method.upper() in m.spec.methods for m in table)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call ``path`` as the operator; the decoded JSON, or :class:`NodeApiError`."""
        credential = self.credential()
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=self.host.settings.listen_url,
                                     headers=credential.headers, auth=credential.auth,
                                     timeout=CALL_TIMEOUT_SECONDS,
                                     follow_redirects=False) as client:
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise NodeApiError(f"{method} {path} failed: {type(exc).__name__}") from None
        try:
            return operator_answer(response)
        except OperatorCallError as exc:
            raise NodeApiError(str(exc), exc.status) from None

    async def skill(self, skill: str, method: str, path: str,
                    body: dict[str, Any] | None = None) -> Any:
        return await self.call(method, f"{SKILLS_PREFIX}/{skill}{path}", body)


__all__ = ["WARM_INTRO", "NodeApi", "NodeApiError"]
