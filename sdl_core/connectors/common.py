"""What every ``darkmesh ingest …`` command shares: flags, auth, batching, progress.

* :func:`connector_options` adds the shared flags (DESIGN.md §11 "Paths and commands",
  ``spec/aauth.md`` §7.4) and hands the command one :class:`ConnectorOptions`.
* :func:`prepare_auth` applies the start-up rule of ``spec/aauth.md`` §5.2 (connector
  row) and returns, per connector name, how its calls authenticate.
* :class:`IngestClient` POSTs ``{"dataset", "records"}`` batches to
  ``<url>/darkmesh/ingest`` with a progress bar on stderr.

The shared node key goes only to the ``--url`` the operator gave (or the settings'
``listen_url``): the client is bound to that base URL and never follows redirects,
and a signed call carries no shared key at all.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

import click
import httpx
from tqdm import tqdm  # type: ignore[import-untyped]

from sdl_core.errors import DarkmeshError
from sdl_core.host import Runtime
from sdl_core.plugins import make_plugin_manager
from sdl_core.protocols import JSONObject, Signer
from sdl_core.settings import NodeSettings, config_path, load_settings, read_config_file

AuthMode = Literal["hmac", "aauth", "either"]
AUTH_MODES = ("hmac", "aauth", "either")
DEFAULT_TIMEOUT = 20.0
DEFAULT_BATCH_SIZE = 5000
INGEST_PATH = "/darkmesh/ingest"
AAUTH_PLUGIN = "darkmesh-aauth"

F = TypeVar("F", bound=Callable[..., Any])


class IngestError(DarkmeshError):
    """The node refused or could not be reached; the message says what to fix."""


# ----------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class LoadedSettings:
    """The node settings a connector found (file + environment), if any."""

    settings: NodeSettings | None
    tables: dict[str, dict[str, Any]]
    source: Path | None

    @property
    def operator(self) -> str:
        """Tag of connector subs: ``node_id``, else ``DARKMESH_OPERATOR``, else ``local``."""
        if self.settings is not None:
            return self.settings.node_id
        return (os.environ.get("DARKMESH_NODE_ID") or os.environ.get("DARKMESH_OPERATOR")
                or "local").strip() or "local"


def load_connector_settings(config: str | os.PathLike[str] | None = None) -> LoadedSettings:
    """Read the settings file in force and the node settings, tolerating their absence.

    A connector can run without any node settings (``--url`` given); then
    ``settings`` is None.
    """
    path = config_path(config)
    tables, _warnings = read_config_file(path)
    try:
        settings: NodeSettings | None = load_settings(NodeSettings, tables)
    except DarkmeshError:
        settings = None
    return LoadedSettings(settings=settings, tables=tables, source=path)


def _root_config(ctx: click.Context | None) -> str | None:
    """The ``--config`` of the root ``darkmesh`` command, when it has one."""
    if ctx is None:
        return None
    root = ctx.find_root()
    value = root.params.get("config") or getattr(root.obj, "config", None)
    return str(value) if value else None


# -------------------------------------------------------------------------- flags


@dataclass(frozen=True, kw_only=True)
class ConnectorOptions:
    """The shared connector flags, resolved: flag > environment > settings > default."""

    url: str | None
    timeout: float
    dry_run: bool
    quiet: bool
    auth_mode: AuthMode
    node_key: str = field(repr=False)
    aauth_private_jwk: Path | None
    aauth_sub: str
    aauth_iss: str
    loaded: LoadedSettings

    def require_url(self) -> str:
        if not self.url:
            raise click.UsageError(
                "--url is required: no node settings found to take listen_url from "
                "(give --url, or --config / DARKMESH_CONFIG pointing at the node's settings)"
            )
        return self.url


def resolve_options(
    *,
    url: str | None,
    timeout: float,
    dry_run: bool,
    quiet: bool,
    auth_mode: str | None,
    node_key: str | None,
    aauth_private_jwk: str | None,
    aauth_sub: str | None,
    aauth_iss: str | None,
    config: str | None = None,
) -> ConnectorOptions:
    """Fill what the flags left open from the loaded node settings."""
    loaded = load_connector_settings(config)
    node = loaded.settings
    if not url and node is not None:
        url = node.listen_url
    mode = auth_mode or (node.auth_mode if node is not None else "either")
    key = node_key if node_key is not None else (
        node.node_key.get_secret_value() if node is not None else ""
    )
    return ConnectorOptions(
        url=url.strip().rstrip("/") if url else None,
        timeout=timeout,
        dry_run=dry_run,
        quiet=quiet,
        auth_mode=mode,  # type: ignore[arg-type]
        node_key=key.strip(),
        aauth_private_jwk=Path(aauth_private_jwk) if aauth_private_jwk else None,
        aauth_sub=(aauth_sub or "").strip(),
        aauth_iss=(aauth_iss or "").strip(),
        loaded=loaded,
    )


def connector_options(func: F) -> F:
    """Add the shared connector flags; the command receives ``options: ConnectorOptions``.

    ``--url`` (default: the loaded settings' ``listen_url``), ``--timeout``,
    ``--dry-run``, ``--quiet``, ``--auth-mode hmac|aauth|either`` (env
    ``DARKMESH_AUTH_MODE``), ``--node-key`` (env ``DARKMESH_NODE_KEY``),
    ``--aauth-private-jwk PATH``, ``--aauth-sub``, ``--aauth-iss``. Connectors ignore
    the node's own ``DARKMESH_AAUTH_*`` identity (``spec/aauth.md`` §7.4).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, url: str | None, timeout: float, dry_run: bool, quiet: bool,
                auth_mode: str | None, node_key: str | None, aauth_private_jwk: str | None,
                aauth_sub: str | None, aauth_iss: str | None, **kwargs: Any) -> Any:
        options = resolve_options(
            url=url, timeout=timeout, dry_run=dry_run, quiet=quiet, auth_mode=auth_mode,
            node_key=node_key, aauth_private_jwk=aauth_private_jwk, aauth_sub=aauth_sub,
            aauth_iss=aauth_iss, config=_root_config(click.get_current_context(silent=True)),
        )
        return func(*args, options=options, **kwargs)

    decorators = [
        click.option("--url", default=None, metavar="URL",
                     help="Node base URL (default: listen_url of the loaded settings)."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT,
                     show_default=True, help="Seconds for every HTTP call."),
        click.option("--dry-run", is_flag=True,
                     help="Print what would be ingested (JSON) and send nothing."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
        click.option("--auth-mode", type=click.Choice(AUTH_MODES), default=None,
                     envvar="DARKMESH_AUTH_MODE",
                     help="hmac: node key; aauth: signed; either (default): signed when a "
                     "connector key is configured, else the node key."),
        click.option("--node-key", default=None, envvar="DARKMESH_NODE_KEY",
                     help="Shared node (operator) key, sent only to --url."),
        click.option("--aauth-private-jwk", default=None, metavar="PATH",
                     type=click.Path(dir_okay=False),
                     help="The connector's private JWK (default <key dir>/connector-<name>"
                     ".private.jwk)."),
        click.option("--aauth-sub", default=None,
                     help="The connector's agent id (default connector-<name>@<operator>)."),
        click.option("--aauth-iss", default=None, help="Issuer of the connector's tokens."),
    ]
    decorated: Any = wrapper
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return decorated  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- auth


def default_connector_sub(name: str, operator: str) -> str:
    return f"connector-{name}@{operator}"


class ConnectorRuntime(Runtime):
    """A host-less plugin runtime: enough to build the signer plugin for a connector.

    ``settings`` is the loaded :class:`NodeSettings` or None; signer factories must not
    assume a running node.
    """

    role: ClassVar[Literal["node", "relay"]] = "node"

    def __init__(self, pm: Any, tables: Mapping[str, Mapping[str, Any]],
                 settings: NodeSettings | None) -> None:
        super().__init__(pm, tables)
        self.settings = settings


def build_connector_signer(options: ConnectorOptions, pm: Any = None) -> Signer | None:
    """The installed signer, configured with the connector flags; None if none installed."""
    manager = pm or make_plugin_manager()
    tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in options.loaded.tables.items()}
    aauth = tables.setdefault("aauth", {})
    if options.aauth_private_jwk is not None:
        aauth["connector_private_jwk_path"] = str(options.aauth_private_jwk)
    if options.aauth_sub:
        aauth["connector_sub"] = options.aauth_sub
    if options.aauth_iss:
        aauth["connector_iss"] = options.aauth_iss
    aauth.setdefault("operator", options.loaded.operator)
    runtime = ConnectorRuntime(manager, tables, options.loaded.settings)
    runtime.config_file = options.loaded.source
    return runtime.build_signer()


@dataclass(frozen=True, kw_only=True)
class ConnectorAuth:
    """How one connector's calls authenticate: signed (``auth``) or a shared key."""

    name: str
    auth: httpx.Auth | None
    node_key: str = field(repr=False)
    sub: str | None

    @property
    def scheme(self) -> str:
        return "aauth" if self.auth is not None else "shared-key"

    def headers(self) -> dict[str, str]:
        # A signed call never carries the shared key (spec/aauth.md §5).
        return {} if self.auth is not None else {"X-Darkmesh-Key": self.node_key}


def prepare_auth(
    options: ConnectorOptions,
    names: Iterable[str],
    *,
    signer_factory: Callable[[ConnectorOptions], Signer | None] = build_connector_signer,
) -> dict[str, ConnectorAuth]:
    """Apply ``spec/aauth.md`` §5.2 (connector row) for each connector name.

    * ``hmac``: the node key is required;
    * ``aauth``: the signer plugin, the connector's key and sub are required;
    * ``either``: the connector's key if present, else the node key; neither ⇒ exit 2
      naming ``--aauth-private-jwk`` and ``--node-key``.

    :raises click.UsageError: (exit status 2) naming the flag to give.
    """
    wanted = list(names)
    signer: Signer | None = None
    if options.auth_mode != "hmac":
        try:
            signer = signer_factory(options)
        except DarkmeshError as exc:
            raise click.UsageError(f"the connector signer could not load: {exc}") from exc
        if signer is None and options.auth_mode == "aauth":
            raise click.UsageError(
                f"--auth-mode aauth needs the {AAUTH_PLUGIN} plugin, which is not installed; "
                f"install {AAUTH_PLUGIN}, or use --auth-mode hmac with --node-key"
            )
    out: dict[str, ConnectorAuth] = {}
    for name in wanted:
        role = f"connector:{name}"
        signed = signer is not None and signer.has_role(role)
        if options.auth_mode == "hmac" or (options.auth_mode == "either" and not signed):
            if not options.node_key:
                if options.auth_mode == "hmac":
                    raise click.UsageError(
                        "--auth-mode hmac needs the node key: give --node-key or set "
                        "DARKMESH_NODE_KEY"
                    )
                raise click.UsageError(
                    f"connector {name!r} has no key to authenticate with: give "
                    f"--aauth-private-jwk (its private JWK, from `darkmesh keygen --connector "
                    f"{name}`) or --node-key (DARKMESH_NODE_KEY)"
                )
            out[name] = ConnectorAuth(name=name, auth=None, node_key=options.node_key, sub=None)
            continue
        if not signed:
            raise click.UsageError(
                f"--auth-mode aauth: connector {name!r} has no signing key; give "
                f"--aauth-private-jwk (from `darkmesh keygen --connector {name}`) and "
                f"--aauth-sub (default {default_connector_sub(name, options.loaded.operator)})"
            )
        assert signer is not None
        identity = signer.identity(role)
        if not identity.sub:
            raise click.UsageError(f"connector {name!r} has no agent id: give --aauth-sub")
        out[name] = ConnectorAuth(name=name, auth=signer.auth(role), node_key="",
                                  sub=identity.sub)
    return out


# ------------------------------------------------------------------------- client


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """What one dataset's ingest did: records sent, batches, the node's final count."""

    dataset: str
    sent: int
    batches: int
    count: int | None

    def to_json(self) -> JSONObject:
        return {"dataset": self.dataset, "sent": self.sent, "batches": self.batches,
                "count": self.count}


def batched(records: Iterable[JSONObject], size: int) -> Iterator[list[JSONObject]]:
    """Consecutive lists of at most ``size`` records, reading lazily."""
    batch: list[JSONObject] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def progress_bar(label: str, *, quiet: bool, total: int | None = None) -> Any:
    """A records-per-second bar on stderr; off when quiet or stderr is not a terminal."""
    return tqdm(total=total, desc=label, unit="rec", unit_scale=True, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), leave=False)


class IngestClient:
    """POSTs ``{"dataset", "records"}`` batches to ``<url>/darkmesh/ingest``.

    One client per node URL. Each connector's :class:`ConnectorAuth` decides signing
    or the shared key; redirects are never followed, so a key cannot leak elsewhere.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        quiet: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.quiet = quiet
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport,
                                         follow_redirects=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post_batch(self, dataset: str, records: list[JSONObject],
                         auth: ConnectorAuth) -> int:
        """Send one batch; return the dataset's total count the node reports."""
        target = self.url + INGEST_PATH
        body = json.dumps({"dataset": dataset, "records": records}, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json", **auth.headers()}
        try:
            response = await self._client.post(target, content=body, headers=headers,
                                               auth=auth.auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException as exc:
            raise IngestError(f"POST {target} timed out; raise --timeout or check the node")\
                from exc
        except httpx.HTTPError as exc:
            raise IngestError(f"cannot reach the node at {self.url} ({type(exc).__name__}: "
                              f"{exc}); is it running? check --url") from exc
        if response.status_code != 200:
            raise IngestError(_refusal(target, response, auth))
        try:
            answer = response.json()
            return int(answer["count"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IngestError(f"POST {target} answered 200 without a count: "
                              f"{response.text[:200]!r}") from exc

    async def ingest(self, dataset: str, records: Iterable[JSONObject],
                     auth: ConnectorAuth, *, label: str | None = None) -> IngestResult:
        """Stream ``records`` to the node in batches, with a progress bar."""
        sent = batches = 0
        count: int | None = None
        with progress_bar(label or dataset, quiet=self.quiet) as bar:
            for batch in batched(records, self.batch_size):
                count = await self.post_batch(dataset, batch, auth)
                sent += len(batch)
                batches += 1
                bar.update(len(batch))
        return IngestResult(dataset=dataset, sent=sent, batches=batches, count=count)


def _refusal(target: str, response: httpx.Response, auth: ConnectorAuth) -> str:
    try:
        detail: Any = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    message = f"POST {target} answered {response.status_code}: {detail}"
    if response.status_code == 401 and auth.scheme == "shared-key":
        message += " (check --node-key / DARKMESH_NODE_KEY)"
    elif response.status_code in (401, 403) and auth.scheme == "aauth":
        message += (f" (the node must trust {auth.sub} with node.ingest: darkmesh trust add "
                    "--capabilities node.ingest)")
    return message
