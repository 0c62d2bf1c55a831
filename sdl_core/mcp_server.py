"""``darkmesh mcp``: an MCP server that gives agents the operator's intro tools.

Tools call the node's documented HTTP routes at ``--url`` (default: the settings'
``listen_url``) as ``darkmesh-operator@<node_id>``: with the operator key
(``--node-key`` / ``DARKMESH_NODE_KEY`` / ``[node] node_key``), else signed by the
signer's ``operator`` role (:mod:`sdl_core.operator`). They never touch a skill's tables.

Tools: ``node_status``, ``request_intro``, ``intro_status``, ``list_candidates``,
``consent``, ``list_pending_approvals``; ``approve_reveal`` and ``decline_reveal`` only
when the operator enables them (``--allow-approve`` or ``[node] mcp_allow_approve``):
approving reveals the operator's own contacts, a decision agents do not get by default.

Transports: stdio (default), or streamable HTTP (``--http``) on 127.0.0.1, where every
request must carry ``Authorization: Bearer <token>`` (``--http-token`` /
``DARKMESH_MCP_TOKEN``, else a random one printed on stderr at start).

Needs the optional extra: ``pip install 'darkmesh-sdl[mcp]'`` (the SDK's 2.x API).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import httpx

from sdl_core.errors import DarkmeshError
from sdl_core.operator import (
    OperatorCallError,
    OperatorCredential,
    operator_answer,
    operator_credential,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

SKILL = "/darkmesh/skills/warm-intro"
SERVER_NAME = "darkmesh"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_HTTP_PORT = 8765
MCP_PATH = "/mcp"
INSTALL_HINT = ("darkmesh mcp needs the MCP SDK: pip install 'darkmesh-sdl[mcp]' "
                "(mcp>=2.3,<3)")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class McpUnavailable(DarkmeshError):
    """The ``mcp`` extra is not installed."""


def _tool_error(message: str) -> Exception:
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(message)


def _checked_id(value: str, name: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise _tool_error(f"{name} must be 1-64 letters, digits, '_' or '-'")
    return value


@dataclass(frozen=True, kw_only=True)
class NodeClient:
    """Calls to one node's API as its operator."""

    base_url: str
    credential: OperatorCredential
    timeout: float = 60.0
    #: Tests route calls in-process (``httpx.ASGITransport``); default: the network.
    transport: httpx.AsyncBaseTransport | None = None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer, or a tool error naming the HTTP status and the node's detail."""
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.credential.headers,
                                     auth=self.credential.auth, timeout=self.timeout,
                                     transport=self.transport,
                                     follow_redirects=False) as client:
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise _tool_error(f"node at {self.base_url} is not reachable "
                                  f"({type(exc).__name__}); is `darkmesh node serve` running?"
                                  ) from None
        try:
            return operator_answer(response)
        except OperatorCallError as exc:
            detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
            raise _tool_error(f"HTTP {exc.status} from {path}: {detail}") from None


def build_server(node: NodeClient, *, allow_approve: bool) -> MCPServer[Any]:
    """The MCP server and its tools (``allow_approve`` adds approve/decline)."""
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError as exc:
        raise McpUnavailable(INSTALL_HINT) from exc

    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions="Warm intros through this Darkmesh node: request_intro, then "
        "intro_status / list_candidates, then consent to a candidate. The responder's "
        "operator approves each reveal; intro_status shows 'revealed' with the intro.",
        log_level="WARNING",
    )

    @server.tool(description="Health and integration readiness of the node (record counts, "
                 "plugin status).")
    async def node_status() -> dict[str, Any]:
        health = await node.call("GET", "/darkmesh/health")
        integrations = await node.call("GET", "/darkmesh/integrations/status")
        return {"health": health, "integrations": integrations}

    @server.tool(description="Ask the network for a warm intro to a company and/or role. "
                 "With wait=true (default) it returns once every live node answered or the "
                 "deadline passed; with wait=false at once (then poll intro_status).")
    async def request_intro(company: str | None = None, role: str | None = None,
                            max_candidates: int = 3, min_strength: float = 0.5,
                            wait: bool = True) -> dict[str, Any]:
        if not (company or "").strip() and not (role or "").strip():
            raise _tool_error("give a company or a role")
        body = {"target": {"company": company, "role": role},
                "constraints": {"max_candidates": max_candidates,
                                "min_strength": min_strength}}
        path = "/request" if wait else "/v2/requests"
        answer = await node.call("POST", SKILL + path, body)
        return answer if isinstance(answer, dict) else {"answer": answer}

    @server.tool(description="Status of an intro request: state, candidates with their "
                 "consent state, and the intros revealed so far.")
    async def intro_status(request_id: str) -> dict[str, Any]:
        answer = await node.call("GET", f"{SKILL}/requests/{_checked_id(request_id, 'request_id')}")
        return answer if isinstance(answer, dict) else {"answer": answer}

    @server.tool(description="The candidates of an intro request (pseudonymous), best first.")
    async def list_candidates(request_id: str) -> dict[str, Any]:
        answer = await node.call("GET", f"{SKILL}/requests/{_checked_id(request_id, 'request_id')}")
        candidates = answer.get("candidates", []) if isinstance(answer, dict) else []
        return {"request_id": request_id, "candidates": candidates}

    @server.tool(description="Consent to one candidate of a request: asks the responder's "
                 "operator to reveal the contact. Answers 'pending' until they decide; call "
                 "again or read intro_status to see 'revealed'.")
    async def consent(request_id: str, consent_id: str) -> dict[str, Any]:
        body = {"request_id": _checked_id(request_id, "request_id"),
                "consent_id": _checked_id(consent_id, "consent_id")}
        answer = await node.call("POST", f"{SKILL}/consent", body)
        return answer if isinstance(answer, dict) else {"answer": answer}

    @server.tool(description="Reveals of this node's contacts waiting for the operator's "
                 "approval.")
    async def list_pending_approvals() -> dict[str, Any]:
        answer = await node.call("GET", f"{SKILL}/approvals")
        return answer if isinstance(answer, dict) else {"approvals": answer}

    if allow_approve:
        @server.tool(description="Approve a held reveal: the requester learns your contact. "
                     "Enabled by the operator (mcp_allow_approve).")
        async def approve_reveal(approval_id: str) -> dict[str, Any]:
            path = f"{SKILL}/approvals/{_checked_id(approval_id, 'approval_id')}/approve"
            answer = await node.call("POST", path)
            return answer if isinstance(answer, dict) else {"answer": answer}

        @server.tool(description="Decline a held reveal (final for that request). Enabled by "
                     "the operator (mcp_allow_approve).")
        async def decline_reveal(approval_id: str) -> dict[str, Any]:
            path = f"{SKILL}/approvals/{_checked_id(approval_id, 'approval_id')}/decline"
            answer = await node.call("POST", path)
            return answer if isinstance(answer, dict) else {"answer": answer}

    return server


class BearerGate:
    """ASGI wrapper: HTTP requests need ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for name, value in scope.get("headers", []):
                if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                    given = value[7:].strip()
            if not hmac.compare_digest(given, self.token):
                body = json.dumps({"detail": "MCP bearer token missing or invalid"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------- CLI


def _settings_and_signer(ctx: click.Context) -> tuple[Any, Any]:
    """The node settings in force and the signer, or (None, None) without a config."""
    from sdl_core.host import Host

    root = ctx.find_root().obj
    host = Host.create(config=root.config_file(), pm=root.plugin_manager())
    signer = host.build_signer() if host.settings.auth_mode != "hmac" else None
    return host.settings, signer


@click.command("mcp")
@click.option("--url", default=None, help="Node base URL [default: the settings' listen_url].")
@click.option("--node-key", envvar="DARKMESH_NODE_KEY", default=None,
              help="Operator shared key (DARKMESH_NODE_KEY) [default: [node] node_key].")
@click.option("--allow-approve/--no-allow-approve", default=None,
              help="Expose approve_reveal/decline_reveal [default: [node] mcp_allow_approve].")
@click.option("--http", "use_http", is_flag=True,
              help="Serve streamable HTTP instead of stdio.")
@click.option("--host", "bind_host", default="127.0.0.1", show_default=True,
              help="With --http: bind address.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_HTTP_PORT,
              show_default=True, help="With --http: port.")
@click.option("--http-token", envvar="DARKMESH_MCP_TOKEN", default=None,
              help="With --http: the bearer token clients send (DARKMESH_MCP_TOKEN) "
              "[default: random, printed on stderr].")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60.0, show_default=True,
              help="HTTP timeout of calls to the node, seconds.")
@click.pass_context
def mcp_command(ctx: click.Context, url: str | None, node_key: str | None,
                allow_approve: bool | None, use_http: bool, bind_host: str, port: int,
                http_token: str | None, timeout: float) -> None:
    """Serve the MCP tools of this node to agents (stdio by default)."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise click.ClickException(INSTALL_HINT) from None
    try:
        settings, signer = _settings_and_signer(ctx)
    except DarkmeshError as exc:
        if not (url and node_key):
            raise click.ClickException(
                f"{exc}\n(or pass both --url and --node-key to run without a settings file)"
            ) from None
        settings, signer = None, None
    base_url = (url or settings.listen_url).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise click.BadParameter(f"{base_url!r} is not an http:// or https:// URL",
                                 param_hint="--url")
    try:
        credential = operator_credential(
            base_url=base_url,
            auth_mode=settings.auth_mode if settings is not None else "hmac",
            node_key=node_key or (settings.node_key.get_secret_value() if settings else ""),
            signer=signer,
        )
    except DarkmeshError as exc:
        raise click.ClickException(str(exc)) from None
    allowed = allow_approve if allow_approve is not None else bool(
        settings is not None and settings.mcp_allow_approve)
    server = build_server(NodeClient(base_url=base_url, credential=credential,
                                     timeout=timeout), allow_approve=allowed)
    if not use_http:
        server.run("stdio")
        return
    from sdl_core.serving import run_app

    token = http_token or secrets.token_urlsafe(32)
    if not http_token:
        click.echo(f"darkmesh mcp: http://{bind_host}:{port}{MCP_PATH} "
                   f"(Authorization: Bearer {token})", err=True)
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=bind_host)
    run_app(BearerGate(app, token), host=bind_host, port=port)


__all__ = ["BearerGate", "NodeClient", "build_server", "mcp_command"]
