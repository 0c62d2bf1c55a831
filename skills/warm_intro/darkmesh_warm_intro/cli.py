"""``darkmesh intro …`` and ``darkmesh demo``.

The ``intro`` commands talk to a running node through the skill's documented HTTP
routes only (never its tables): with the operator key (``--node-key`` /
``DARKMESH_NODE_KEY``, else ``[node] node_key`` of the settings file), or, without
one, signed as ``darkmesh-operator@<node_id>`` by the installed signer plugin.
``--url`` defaults to the settings' ``listen_url``.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import click
import httpx

SKILL = "/darkmesh/skills/warm-intro"
DEFAULT_URL = "http://localhost:8001"


class IntroError(click.ClickException):
    """One line on stderr, exit status 2 (the core CLI's convention)."""

    exit_code = 2


def _tables(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root().obj
    tables = getattr(root, "tables", None)
    if tables is None:
        return {}
    try:
        value = tables()
    except Exception as exc:  # a broken settings file is the operator's to fix
        raise IntroError(f"cannot read the settings file: {exc}") from exc
    return value if isinstance(value, dict) else {}


def _node_table(ctx: click.Context) -> dict[str, Any]:
    node = _tables(ctx).get("node", {})
    return node if isinstance(node, dict) else {}


def _signer_auth(ctx: click.Context, url: str) -> httpx.Auth | None:
    """The operator signer's ``httpx.Auth`` when a signer plugin is configured."""
    from sdl_core import DarkmeshError, Host

    root = ctx.find_root().obj
    if not hasattr(root, "plugin_manager") or not hasattr(root, "config_file"):
        return None  # invoked outside the darkmesh root command: no settings, no plugins
    try:
        host = Host.create(config=root.config_file(), pm=root.plugin_manager())
        signer = host.build_signer()
    except DarkmeshError as exc:
        raise IntroError(f"cannot load the operator signer: {exc}") from exc
    if signer is None or not signer.has_role("operator"):
        return None
    authority = httpx.URL(url).netloc.decode("ascii")
    return signer.auth("operator", authority=authority)


class NodeApi:
    """Calls to one node's warm-intro routes."""

    def __init__(self, ctx: click.Context, url: str | None, node_key: str | None,
                 timeout: float) -> None:
        node = _node_table(ctx)
        listen = node.get("listen_url") or (f"http://localhost:{node['port']}"
                                            if node.get("port") else DEFAULT_URL)
        self.url = (url or str(listen)).rstrip("/")
        key = node_key or node.get("node_key") or ""
        headers = {"X-Darkmesh-Key": str(key)} if key else {}
        self._ctx, self._headers, self._key, self._timeout = ctx, headers, key, timeout
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """Built on first use, so ``--help`` of a sub-command needs no credential."""
        if self._http is None:
            auth = None if self._key else _signer_auth(self._ctx, self.url)
            if not self._key and auth is None:
                raise IntroError("no operator credential: pass --node-key (or set "
                                 "DARKMESH_NODE_KEY), or install and configure darkmesh-aauth")
            self._http = httpx.Client(base_url=self.url, headers=self._headers, auth=auth,
                                      timeout=self._timeout, follow_redirects=False)
        return self._http

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.request(method, SKILL + path, json=body)
        except httpx.HTTPError as exc:
            raise IntroError(f"cannot reach the node at {self.url} (--url): {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {"detail": response.text}
        if response.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else data
            raise IntroError(f"HTTP {response.status_code}: {detail}")
        return data


pass_api = click.make_pass_decorator(NodeApi)


@click.group("intro")
@click.option("--url", default=None, help="Node base URL [default: the settings' listen_url].")
@click.option("--node-key", envvar="DARKMESH_NODE_KEY", default=None,
              help="Operator shared key (DARKMESH_NODE_KEY).")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60.0, show_default=True,
              help="HTTP timeout, seconds.")
@click.pass_context
def intro_group(ctx: click.Context, url: str | None, node_key: str | None,
                timeout: float) -> None:
    """Ask for warm intros, consent to candidates, approve reveals of your contacts."""
    ctx.obj = NodeApi(ctx, url, node_key, timeout)


def _emit(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


def _candidate_lines(answer: dict[str, Any]) -> list[str]:
    lines = [(f"request {answer.get('request_id')}: {len(answer.get('candidates', []))} "
              f"candidate(s), privacy cost {answer.get('privacy_cost')}")]
    if answer.get("live_nodes") is not None:
        lines[0] += f", {answer.get('answered')}/{answer.get('live_nodes')} nodes answered"
    for c in answer.get("candidates", []):
        state = f" [{c['state']}]" if c.get("state") else ""
        lines.append(f"  {c['pseudonym_id']}  score {c['score']}  consent_id "
                     f"{c['consent_id']}{state}")
    return lines


@intro_group.command("request")
@click.option("--company", default=None, help="Target company (substring match).")
@click.option("--role", default=None, help="Target role (substring match).")
@click.option("--min-strength", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--max-candidates", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--template", type=click.Choice(["warm_intro_v2", "warm_intro_v1"]),
              default=None, help="Protocol [default: the node's default_template].")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def request_command(api: NodeApi, company: str | None, role: str | None, min_strength: float,
                    max_candidates: int, template: str | None, as_json: bool) -> None:
    """Find who among your contacts' nodes can introduce you."""
    if not (company or "").strip() and not (role or "").strip():
        raise click.UsageError("give --company or --role (an empty target is refused)")
    body: dict[str, Any] = {"target": {"company": company, "role": role},
                            "constraints": {"min_strength": min_strength,
                                            "max_candidates": max_candidates}}
    if template:
        body["template"] = template
    answer = api.call("POST", "/request", body)
    _emit(answer, as_json, _candidate_lines(answer))


@intro_group.command("status")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def status_command(api: NodeApi, request_id: str, as_json: bool) -> None:
    """Show a v2 request: candidates, consent states and intros."""
    status = api.call("GET", f"/requests/{request_id}")
    lines = _candidate_lines(status)
    lines.insert(1, f"  state: {status.get('state')}")
    for consent_id, intro in (status.get("intros") or {}).items():
        lines.append(f"  intro for {consent_id}: {_intro_line(intro)}")
    _emit(status, as_json, lines)


def _intro_line(intro: dict[str, Any]) -> str:
    contact = intro.get("target_contact", {})
    return (f"{contact.get('name')} <{contact.get('email')}> ({contact.get('role')}, "
            f"{contact.get('org')}) via {intro.get('connector', {}).get('node_id')}, "
            f"strength {intro.get('relationship_strength')}")


@intro_group.command("consent")
@click.argument("request_id")
@click.argument("consent_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def consent_command(api: NodeApi, request_id: str, consent_id: str, as_json: bool) -> None:
    """Consent to a candidate (v2: pending until the connector's operator approves)."""
    result = api.call("POST", "/consent", {"request_id": request_id, "consent_id": consent_id})
    state = result.get("state") or ("revealed" if result.get("approved") else "declined")
    lines = [f"{result.get('pseudonym_id')}: {state}"]
    if result.get("intro"):
        lines.append("  " + _intro_line(result["intro"]))
    _emit(result, as_json, lines)


@intro_group.command("pending")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def pending_command(api: NodeApi, as_json: bool) -> None:
    """List reveals of your contacts waiting for your approval."""
    approvals = api.call("GET", "/approvals")["approvals"]
    lines = [f"{len(approvals)} pending approval(s)"]
    for a in approvals:
        contact = a.get("contact") or {}
        lines.append(f"  {a['approval_id']}  {a.get('template')}  from "
                     f"{a.get('requester_node_id')}  reveals {contact.get('name')} "
                     f"({contact.get('role')}, {contact.get('org')})")
    _emit({"approvals": approvals}, as_json, lines)


def _decide(api: NodeApi, approval_id: str, verb: str, as_json: bool) -> None:
    result = api.call("POST", f"/approvals/{approval_id}/{verb}")
    _emit(result, as_json, [f"{approval_id}: {result.get('state')}"])


@intro_group.command("approve")
@click.argument("approval_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def approve_command(api: NodeApi, approval_id: str, as_json: bool) -> None:
    """Approve a pending reveal."""
    _decide(api, approval_id, "approve", as_json)


@intro_group.command("decline")
@click.argument("approval_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def decline_command(api: NodeApi, approval_id: str, as_json: bool) -> None:
    """Decline a pending reveal (final for that request)."""
    _decide(api, approval_id, "decline", as_json)


def _when(epoch: Any) -> str:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _key_lines(keys: dict[str, Any]) -> list[str]:
    pinned = keys.get("pinned") or []
    changes = keys.get("pending_changes") or []
    lines = [f"this node ({keys.get('node_id')}): v2 key fingerprint {keys.get('fingerprint')}",
             f"{len(pinned)} pinned peer key(s)"]
    lines += [f"  {p.get('node_id')}  {p.get('fingerprint')}  pinned {_when(p.get('pinned_at'))}"
              for p in pinned]
    if changes:
        lines.append(f"{len(changes)} changed key(s) refused until you accept them "
                     "(check the fingerprint with that node's operator first; then "
                     "`darkmesh intro keys accept NODE_ID`)")
        lines += [f"  {c.get('node_id')}  new {c.get('fingerprint')}  seen "
                  f"{_when(c.get('seen_at'))}" for c in changes]
    return lines


@intro_group.group("keys", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@click.pass_context
def keys_group(ctx: click.Context, as_json: bool) -> None:
    """List this node's v2 key fingerprint, the pinned peer keys and changed keys."""
    if ctx.invoked_subcommand is not None:
        return
    api = ctx.find_object(NodeApi)
    if api is None:  # only when invoked outside `darkmesh intro`
        raise IntroError("darkmesh intro keys: run it as a sub-command of `darkmesh intro`")
    keys = api.call("GET", "/keys")
    _emit(keys, as_json, _key_lines(keys))


@keys_group.command("accept")
@click.argument("node_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@pass_api
def accept_key_command(api: NodeApi, node_id: str, as_json: bool) -> None:
    """Accept NODE_ID's changed v2 key (its messages are refused until then)."""
    # Quoted whole: a node id is one path segment, whatever it contains.
    result = api.call("POST", f"/keys/{quote(node_id, safe='')}/accept")
    _emit(result, as_json, [f"{result.get('node_id')}: accepted key "
                            f"{result.get('fingerprint')}"])


@click.command("demo")
@click.option("--protocol", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
              help="v2 (default between Darkmesh nodes) or the upstream v1 flow.")
def demo_command(protocol: str) -> None:
    """Start a relay and nodes A, B, C on loopback and run one intro end to end."""
    from darkmesh_warm_intro.demo import DemoFailed, run_demo

    try:
        run_demo(protocol, click.echo)
    except (DemoFailed, RuntimeError) as exc:
        raise IntroError(f"demo failed: {exc}") from exc
