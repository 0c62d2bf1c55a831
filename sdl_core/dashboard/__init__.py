"""The node-local operator dashboard, served at ``/darkmesh/ui``.

Server-rendered (Jinja2, autoescaped), no front-end build and no JavaScript: node card
and health, integration readiness, pending approvals with approve/decline, recent
intros, the reveal audit log, v2 key pins, the trust registry, installed plugins and
their settings (secrets redacted). Its routes declare ``operator-session``: the core
guard passes them through and :mod:`sdl_core.dashboard.sessions` checks the login
session, the loopback rule and the CSRF token. Skill data comes only from the skills'
documented routes, called in-process as the operator.
"""

from sdl_core.dashboard.routes import dashboard_routes
from sdl_core.dashboard.sessions import UI_PREFIX, DashboardAccess

__all__ = ["UI_PREFIX", "DashboardAccess", "dashboard_routes"]
