"""The dashboard's operator session: login secret, session ids, CSRF tokens, loopback rule.

* **Login secret.** ``dashboard_secret`` when configured, else a random one made per
  process start and kept in memory only; ``darkmesh node serve`` prints the login URL
  carrying it. Every page needs a session; the secret is the only way to get one.
* **Sessions** are random ids held in memory (a restart logs everyone out), sent as an
  ``HttpOnly; SameSite=Strict`` cookie scoped to ``/darkmesh/ui``, bounded in number and
  lifetime.
* **CSRF.** Each session has its own token, put into every form as a hidden field and
  compared in constant time on every POST.
* **Loopback.** With ``dashboard_loopback_only`` (default), a client whose address is not
  loopback gets 403, unless the operator configured ``dashboard_secret`` (remote access
  is then a deliberate choice and still needs the secret).
* **Guessing.** A configured secret may be weak, so failed logins are counted per client
  address: past ``MAX_FAILED_LOGINS`` within ``FAILED_LOGIN_WINDOW_SECONDS`` that address
  gets 429 with ``Retry-After`` (even for the right secret) until its oldest failure ages
  out. The table of addresses is bounded.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sdl_core.errors import HTTPProblem

if TYPE_CHECKING:
    from starlette.requests import Request

    from sdl_core.settings import NodeSettings

UI_PREFIX = "/darkmesh/ui"
COOKIE_NAME = "darkmesh_ui_session"
CSRF_FIELD = "csrf_token"
#: Most live sessions; the oldest is dropped beyond this, so memory stays bounded.
MAX_SESSIONS = 64
#: Flash messages kept per session (older ones are dropped).
MAX_NOTICES = 5
#: Failed logins one client address may make per window before it is refused with 429.
MAX_FAILED_LOGINS = 10
FAILED_LOGIN_WINDOW_SECONDS = 300.0
#: Client addresses whose failures are remembered; the least recent is forgotten beyond.
MAX_TRACKED_CLIENTS = 1024


@dataclass
class OperatorSession:
    """One logged-in browser."""

    session_id: str
    csrf_token: str
    expires_at: float
    notices: list[tuple[str, str]] = field(default_factory=list)  # (level, text)

    def notify(self, level: str, text: str) -> None:
        """Queue a message for the next page this session sees."""
        self.notices = [*self.notices, (level, text)][-MAX_NOTICES:]

    def take_notices(self) -> list[tuple[str, str]]:
        notices, self.notices = self.notices, []
        return notices


class LoginThrottle:
    """Failed-login timestamps per client address, bounded in addresses and per address."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILED_LOGINS,
        window_seconds: float = FAILED_LOGIN_WINDOW_SECONDS,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str) -> list[float]:
        horizon = self._clock() - self.window_seconds
        recent = [t for t in self._failures.get(client, []) if t > horizon]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def check(self, client: str) -> None:
        """429 with ``Retry-After`` while ``client`` has used up its failures."""
        recent = self._recent(client)
        if len(recent) < self.max_failures:
            return
        retry_after = max(1, int(recent[0] + self.window_seconds - self._clock()) + 1)
        raise HTTPProblem(
            429, f"too many failed dashboard logins from this address; try again in "
            f"{retry_after} s", reason="dashboard_login_throttled",
            headers={"Retry-After": str(retry_after)},
        )

    def failed(self, client: str) -> None:
        recent = self._recent(client)
        self._failures[client] = [*recent, self._clock()][-self.max_failures:]
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def client_address(request: Request) -> str:
    """The TCP peer's address as the ASGI scope gives it ("" when there is none)."""
    client = request.scope.get("client")
    return str(client[0]) if client else ""


def is_loopback_client(request: Request) -> bool:
    """Whether the TCP peer is a loopback address (the ASGI scope's ``client``)."""
    client = request.scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0]).split("%", 1)[0]).is_loopback
    except ValueError:  # a unix socket path or a name: not provably local
        return False


class DashboardAccess:
    """Login secret and live sessions of one node process."""

    def __init__(
        self,
        *,
        secret: str = "",
        loopback_only: bool = True,
        session_ttl_seconds: float = 12 * 3600.0,
        listen_url: str = "http://localhost:8001",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configured_secret = bool(secret)
        self.secret = secret or secrets.token_urlsafe(32)
        self.loopback_only = loopback_only
        self.session_ttl_seconds = session_ttl_seconds
        self.listen_url = listen_url.rstrip("/")
        self._clock = clock
        self._sessions: OrderedDict[str, OperatorSession] = OrderedDict()
        self.throttle = LoginThrottle(clock=clock)

    @classmethod
    def for_settings(cls, settings: NodeSettings) -> DashboardAccess:
        return cls(
            secret=settings.dashboard_secret.get_secret_value(),
            loopback_only=settings.dashboard_loopback_only,
            session_ttl_seconds=settings.dashboard_session_ttl_seconds,
            listen_url=settings.listen_url,
        )

    # ---------------------------------------------------------------- printing

    def login_url(self) -> str:
        """The URL ``darkmesh node serve`` prints. A configured secret is not printed."""
        base = f"{self.listen_url}{UI_PREFIX}/login"
        if self.configured_secret:
            return base
        return f"{base}?token={quote(self.secret, safe='')}"

    def banner(self) -> str:
        if self.configured_secret:
            return f"dashboard: {self.login_url()} (log in with [node] dashboard_secret)"
        return f"dashboard: {self.login_url()} (session secret of this run; keep it private)"

    # ------------------------------------------------------------------ checks

    def check_client(self, request: Request) -> None:
        """403 for a non-loopback client of a loopback-only dashboard."""
        if self.loopback_only and not self.configured_secret and not is_loopback_client(request):
            raise HTTPProblem(
                403, "the dashboard answers loopback clients only; set [node] dashboard_secret "
                "(DARKMESH_DASHBOARD_SECRET) to allow remote operators",
                reason="dashboard_loopback_only",
            )

    def secret_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8"), self.secret.encode("utf-8"))

    def try_login(self, request: Request, candidate: str) -> bool:
        """Check ``candidate`` against the secret, counting failures per client address.

        :raises HTTPProblem: 429 while the address is throttled (checked before the secret,
            so a throttled guesser learns nothing).
        """
        client = client_address(request)
        self.throttle.check(client)
        if self.secret_matches(candidate):
            self.throttle.succeeded(client)
            return True
        self.throttle.failed(client)
        return False

    # ---------------------------------------------------------------- sessions

    def open_session(self) -> OperatorSession:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = OperatorSession(
            session_id=secrets.token_urlsafe(32), csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self.session_ttl_seconds,
        )
        self._sessions[session.session_id] = session
        return session

    def session_of(self, request: Request) -> OperatorSession | None:
        """The live session named by the request's cookie, if any."""
        session_id = request.cookies.get(COOKIE_NAME, "")
        if not session_id:
            return None
        self._expire()
        return self._sessions.get(session_id)

    def close_session(self, session: OperatorSession) -> None:
        self._sessions.pop(session.session_id, None)

    def _expire(self) -> None:
        now = self._clock()
        for session_id in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[session_id]

    @staticmethod
    def check_csrf(session: OperatorSession, form: Any) -> None:
        """403 unless the form carries this session's CSRF token."""
        given = form.get(CSRF_FIELD) if form is not None else None
        if not isinstance(given, str) or not given or not hmac.compare_digest(
            given.encode("utf-8"), session.csrf_token.encode("utf-8")
        ):
            raise HTTPProblem(403, "CSRF token missing or invalid; reload the dashboard and "
                              "try again", reason="csrf_failed")

    def cookie_arguments(self, request: Request, session: OperatorSession) -> dict[str, Any]:
        """Arguments of ``Response.set_cookie`` for ``session``."""
        return {
            "key": COOKIE_NAME, "value": session.session_id,
            "max_age": int(self.session_ttl_seconds), "path": UI_PREFIX,
            "httponly": True, "samesite": "strict",
            "secure": request.url.scheme == "https",
        }


__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "UI_PREFIX",
    "DashboardAccess",
    "LoginThrottle",
    "OperatorSession",
    "client_address",
    "is_loopback_client",
]
