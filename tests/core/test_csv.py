"""The CSV connector: wire-v1 §8 column rules, dry run, auth rule, batching over HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import socket
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sdl_core import AgentIdentity, DarkmeshSettings, SignerSpec, hookimpl, make_plugin_manager
from sdl_core.connectors.common import (
    ConnectorAuth,
    IngestClient,
    IngestError,
    build_connector_signer,
    prepare_auth,
    resolve_options,
)
from sdl_core.connectors.csv import (
    CONTACTS,
    INTERACTIONS,
    CsvFormatError,
    contact_from_row,
    csv_command,
    ingest_files,
    interaction_from_row,
    read_csv,
)
from sdl_core.default_plugins.memory_store import MemoryStore

# Byte-for-byte copies of spec/demo-data (the core tests run without the skill package).
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo-data"
NODE_KEY = "operator-secret-key"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings file, node id or key leaks in from the developer's shell."""
    for name in ("DARKMESH_CONFIG", "DARKMESH_NODE_ID", "DARKMESH_NODE_KEY", "DARKMESH_AUTH_MODE",
                 "DARKMESH_OPERATOR", "DARKMESH_LISTEN_URL", "DARKMESH_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    # Third-party plugins (the real AAuth signer among them) may be installed beside the
    # core; these tests pin the "no signer installed" case and inject fake signers, so
    # only built-ins load: DARKMESH_LOAD_PLUGINS names no installed distribution.
    monkeypatch.setenv("DARKMESH_LOAD_PLUGINS", "none")
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read_all(path: Path, kind: Any) -> list[dict[str, Any]]:
    return list(read_csv(path, kind))


# ------------------------------------------------------------------ column rules


def test_demo_files_parse_exactly() -> None:
    assert read_all(DEMO / "node_b_contacts.csv", CONTACTS) == [
        {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
         "role": "Business Development", "strength": 0.9},
        {"name": "Jordan Ops", "email": "jordan@companyy.com", "org": "Company Y",
         "role": "Operations", "strength": 0.6},
    ]
    assert read_all(DEMO / "node_a_interactions.csv", INTERACTIONS) == [
        {"email": "casey@connector.com", "strength": 0.92},
        {"email": "blake@otherco.com", "strength": 0.35},
    ]


def test_contacts_column_rules(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 "extra,role,email,name,org,strength\n"
                 "x,  Advisor , \tCasey@Connector.COM ,  Casey  ,Org,0.7\n"
                 "x,CEO,,No Email,Acme,\n"          # empty email kept, no strength
                 "x,CTO,   ,Blank Email,Acme,high\n"  # unparsable strength → 0.5
                 "x,R,a@b.c,N,O, 0.25 \n"
                 "x,R,n@b.c,N,O,nan\n"               # non-finite → 0.5 (not JSON)
                 "x,R,s@b.c\n")                       # short row: missing cells are null
    assert read_all(path, CONTACTS) == [
        {"name": "  Casey  ", "email": "casey@connector.com", "org": "Org", "role": "  Advisor ",
         "strength": 0.7},
        {"name": "No Email", "email": "", "org": "Acme", "role": "CEO"},
        {"name": "Blank Email", "email": "", "org": "Acme", "role": "CTO", "strength": 0.5},
        {"name": "N", "email": "a@b.c", "org": "O", "role": "R", "strength": 0.25},
        {"name": "N", "email": "n@b.c", "org": "O", "role": "R", "strength": 0.5},
        {"name": None, "email": "s@b.c", "org": None, "role": "R"},
    ]


def test_contacts_missing_columns_read_as_null(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "name,role\nPat,CEO\n")
    assert read_all(path, CONTACTS) == [{"name": "Pat", "email": "", "org": None, "role": "CEO"}]


def test_interactions_column_rules(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv",
                 "strength,email,notes\n"
                 "0.9, Taylor@CompanyX.com ,x\n"
                 "0.8,,skipped\n"
                 "0.7,   ,skipped too\n"
                 ",empty@x.com,\n"
                 "strong,bad@x.com,\n"
                 "1e-1,sci@x.com,\n")
    assert read_all(path, INTERACTIONS) == [
        {"email": "taylor@companyx.com", "strength": 0.9},
        {"email": "empty@x.com", "strength": 0.5},
        {"email": "bad@x.com", "strength": 0.5},
        {"email": "sci@x.com", "strength": 0.1},
    ]


def test_interactions_without_strength_column(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "email\na@x.com\n")
    assert read_all(path, INTERACTIONS) == [{"email": "a@x.com", "strength": 0.5}]


def test_bom_and_quoted_cells(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes('\ufeffname,email,org,role\n"Doe, Jane",J@X.com,"Org ""Q""",VP\n'
                     .encode("utf-8"))
    assert read_all(path, CONTACTS) == [
        {"name": "Doe, Jane", "email": "j@x.com", "org": 'Org "Q"', "role": "VP"},
    ]


@pytest.mark.parametrize("text, message", [
    ("", "is empty: a header row (name,email,org,role,strength) is required"),
    ("Casey,casey@x.com,Org,Advisor,0.8\n", "has no header row"),
])
def test_contacts_header_required(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "contacts.csv", text)
    with pytest.raises(CsvFormatError, match=r"contacts\.csv") as info:
        read_all(path, CONTACTS)
    assert message in str(info.value)


def test_interactions_header_needs_email(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "mail,strength\na@x.com,0.4\n")
    with pytest.raises(CsvFormatError, match=r"i.csv: the header row has no email column"):
        read_all(path, INTERACTIONS)
    headerless = write(tmp_path / "j.csv", "a@x.com,0.4\n")
    with pytest.raises(CsvFormatError, match=r"j\.csv has no header row"):
        read_all(headerless, INTERACTIONS)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"name,email\nCasey,\xff\xfe@x.com\n")
    with pytest.raises(CsvFormatError, match=r"c\.csv is not UTF-8 text"):
        read_all(path, CONTACTS)


_cells = st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                      max_size=12))


@given(email=_cells, strength=_cells, name=_cells)
def test_row_rules_property(email: str | None, strength: str | None, name: str | None) -> None:
    row = {"email": email, "strength": strength, "name": name}
    contact = contact_from_row(row)
    assert contact["email"] == (email or "").strip().lower()
    assert contact["name"] == name and contact["org"] is None
    if strength is None or strength == "":
        assert "strength" not in contact
    else:
        value = contact["strength"]
        try:
            parsed = float(strength)
        except ValueError:
            parsed = 0.5
        assert value == (parsed if math.isfinite(parsed) else 0.5)
    interaction = interaction_from_row(row)
    if not (email or "").strip():
        assert interaction is None
    else:
        assert interaction is not None and interaction["email"] == contact["email"]
        assert isinstance(interaction["strength"], float)


@given(rows=st.lists(st.tuples(st.emails(), st.floats(0, 1)), max_size=20))
def test_csv_writer_round_trip(rows: list[tuple[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["email", "strength"])
    writer.writerows([(f" {e.upper()} ", repr(s)) for e, s in rows])
    reader = csv.DictReader(io.StringIO(buffer.getvalue()))
    parsed = [interaction_from_row(row) for row in reader]
    assert parsed == [{"email": e.lower(), "strength": s} for e, s in rows]


# ------------------------------------------------------------------- a fake node


def fake_node(store: MemoryStore, seen: list[dict[str, Any]]) -> Starlette:
    """Just enough of /darkmesh/ingest to test the client: key check, count answer."""

    async def ingest(request: Request) -> JSONResponse:
        seen.append({"headers": dict(request.headers), "body": await request.body()})
        signed = "signature" in request.headers
        if not signed and request.headers.get("x-darkmesh-key") != NODE_KEY:
            return JSONResponse({"detail": "invalid node key"}, status_code=401)
        body = json.loads(await request.body())
        if body["dataset"] not in ("contacts", "interactions"):
            return JSONResponse({"detail": "unknown dataset"}, status_code=422)
        count = await store.upsert(body["dataset"], body["records"])
        return JSONResponse({"dataset": body["dataset"], "count": count})

    return Starlette(routes=[Route("/darkmesh/ingest", ingest, methods=["POST"])])


def options_for(url: str | None = "http://node.test", **flags: Any) -> Any:
    base: dict[str, Any] = {"url": url, "timeout": 5.0, "dry_run": False, "quiet": True,
                            "auth_mode": "hmac", "node_key": NODE_KEY,
                            "aauth_private_jwk": None, "aauth_sub": None, "aauth_iss": None}
    base.update(flags)
    return resolve_options(**base)


def write_contacts(path: Path, n: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "org", "role", "strength"])
        writer.writerows([f"P{i}", f"p{i}@x.com", "Org", "Role", "0.5"] for i in range(n))
    return path


@pytest.mark.asyncio
async def test_ingest_files_in_batches() -> None:
    store = MemoryStore()
    seen: list[dict[str, Any]] = []
    transport = httpx.ASGITransport(app=fake_node(store, seen))
    contacts = write_contacts(Path("contacts.csv"), 2500)
    summary = await ingest_files([(CONTACTS, contacts),
                                  (INTERACTIONS, DEMO / "node_a_interactions.csv")],
                                 options_for(), 1000, transport=transport)
    assert summary["datasets"] == [
        {"dataset": "contacts", "sent": 2500, "batches": 3, "count": 2500,
         "file": "contacts.csv", "connector": "csv-contacts", "auth": "shared-key",
         "skipped": 0},
        {"dataset": "interactions", "sent": 2, "batches": 1, "count": 2,
         "file": str(DEMO / "node_a_interactions.csv"), "connector": "csv-interactions",
         "auth": "shared-key", "skipped": 0},
    ]
    assert [len(json.loads(s["body"])["records"]) for s in seen] == [1000, 1000, 500, 2]
    assert all(s["headers"]["x-darkmesh-key"] == NODE_KEY for s in seen)
    assert await store.count("contacts") == 2500


@pytest.mark.asyncio
async def test_refusal_names_the_flag() -> None:
    transport = httpx.ASGITransport(app=fake_node(MemoryStore(), []))
    options = options_for(node_key="wrong")
    with pytest.raises(IngestError, match=r"answered 401: invalid node key \(check --node-key"):
        await ingest_files([(INTERACTIONS, DEMO / "node_a_interactions.csv")], options, 10,
                           transport=transport)


@pytest.mark.asyncio
async def test_unreachable_node_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = IngestClient(f"http://127.0.0.1:{port}", timeout=2, quiet=True)
    auth = ConnectorAuth(name="csv-contacts", auth=None, node_key=NODE_KEY, sub=None)
    with pytest.raises(IngestError, match=r"cannot reach the node.*check --url"):
        await client.post_batch("contacts", [{"email": "a@x.com"}], auth)
    await client.aclose()


@pytest.mark.asyncio
async def test_redirects_are_not_followed_so_the_key_stays_home() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(307, headers={"Location": "http://evil.test/darkmesh/ingest"})

    client = IngestClient("http://node.test", quiet=True, transport=httpx.MockTransport(handler))
    auth = ConnectorAuth(name="csv-contacts", auth=None, node_key=NODE_KEY, sub=None)
    with pytest.raises(IngestError, match="answered 307"):
        await client.post_batch("contacts", [{"email": "a@x.com"}], auth)
    await client.aclose()
    assert [str(r.url) for r in seen] == ["http://node.test/darkmesh/ingest"]


# --------------------------------------------------------------- auth start-up rule


class FakeAuth(httpx.Auth):
    def __init__(self, role: str) -> None:
        self.role = role

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Signature"] = f"sig-for-{self.role}"
        request.headers["Signature-Input"] = "sig=()"
        yield request


class FakeSigner:
    def __init__(self, roles: set[str]) -> None:
        self.roles = roles

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def identity(self, role: str = "node") -> AgentIdentity:
        return AgentIdentity(sub=f"{role.replace(':', '-')}@test", iss="https://t",
                             thumbprint="tp", public_jwk={})

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: str = "darkmesh") -> httpx.Auth:
        return FakeAuth(role)


def test_hmac_needs_the_node_key() -> None:
    with pytest.raises(Exception, match="--node-key") as info:
        prepare_auth(options_for(node_key=""), ["csv-contacts"])
    assert info.value.exit_code == 2  # type: ignore[attr-defined]


def test_either_without_any_key_names_both_flags() -> None:
    options = options_for(auth_mode="either", node_key="")
    with pytest.raises(Exception, match=r"--aauth-private-jwk.*--node-key") as info:
        prepare_auth(options, ["csv-contacts"])
    assert info.value.exit_code == 2  # type: ignore[attr-defined]


def test_aauth_without_signer_plugin_names_it() -> None:
    with pytest.raises(Exception, match="needs the darkmesh-aauth plugin"):
        prepare_auth(options_for(auth_mode="aauth"), ["csv-contacts"])


def test_aauth_without_connector_key_names_the_flag() -> None:
    with pytest.raises(Exception, match=r"no signing key; give --aauth-private-jwk.*"
                                        r"connector-csv-contacts@local"):
        prepare_auth(options_for(auth_mode="aauth"), ["csv-contacts"],
                     signer_factory=lambda o: FakeSigner(set()))


def test_either_signs_when_the_connector_has_a_key_else_uses_the_node_key() -> None:
    auths = prepare_auth(options_for(auth_mode="either"), ["csv-contacts", "csv-interactions"],
                         signer_factory=lambda o: FakeSigner({"connector:csv-contacts"}))
    assert auths["csv-contacts"].scheme == "aauth"
    assert auths["csv-contacts"].headers() == {}
    assert auths["csv-contacts"].sub == "connector-csv-contacts@test"
    assert auths["csv-interactions"].scheme == "shared-key"
    assert auths["csv-interactions"].headers() == {"X-Darkmesh-Key": NODE_KEY}


@pytest.mark.asyncio
async def test_signed_ingest_carries_no_shared_key() -> None:
    store = MemoryStore()
    seen: list[dict[str, Any]] = []
    transport = httpx.ASGITransport(app=fake_node(store, seen))

    def signed(options: Any, names: list[str]) -> dict[str, ConnectorAuth]:
        return prepare_auth(options, names,
                            signer_factory=lambda o: FakeSigner({"connector:csv-contacts"}))

    summary = await ingest_files([(CONTACTS, DEMO / "node_a_contacts.csv")],
                                 options_for(auth_mode="aauth"), 100,
                                 auth_factory=signed, transport=transport)
    assert summary["datasets"][0]["auth"] == "aauth"
    assert seen[0]["headers"]["signature"] == "sig-for-connector:csv-contacts"
    assert "x-darkmesh-key" not in seen[0]["headers"]


class ConnectorSignerSettings(DarkmeshSettings):
    """Stands in for the AAuth plugin's settings: the connector keys it reads."""

    section: ClassVar[str] = "aauth"
    model_config = SettingsConfigDict(env_prefix="DARKMESH_TEST_AAUTH_", extra="ignore")
    connector_private_jwk_path: str = Field(default="", description="key path")
    connector_sub: str = Field(default="", description="sub")
    connector_iss: str = Field(default="", description="iss")
    operator: str = Field(default="", description="operator tag")


class RecordingSignerPlugin:
    __name__ = "recording-signer"
    built: ClassVar[list[tuple[Any, Any]]] = []

    @staticmethod
    @hookimpl
    def darkmesh_register_signers() -> Iterator[SignerSpec]:
        def factory(runtime: Any, settings: Any) -> FakeSigner:
            RecordingSignerPlugin.built.append((runtime, settings))
            return FakeSigner({"connector:csv-contacts"})

        yield SignerSpec(name="recording", factory=factory, settings=ConnectorSignerSettings)


def test_signer_built_host_less_with_the_connector_flags(tmp_path: Path) -> None:
    write(tmp_path / "darkmesh.toml", '[node]\nnode_id = "node_a"\n'
                                      'listen_url = "http://127.0.0.1:8123/"\n')
    options = options_for(url=None, auth_mode="aauth", aauth_private_jwk="keys/c.jwk",
                          aauth_sub="connector-csv-contacts@node_a", aauth_iss="https://i")
    pm = make_plugin_manager(entry_points=False, plugins=[RecordingSignerPlugin])
    RecordingSignerPlugin.built.clear()
    signer = build_connector_signer(options, pm)
    assert signer is not None and signer.has_role("connector:csv-contacts")
    ((runtime, settings),) = RecordingSignerPlugin.built
    assert runtime.settings.node_id == "node_a"
    assert settings.connector_private_jwk_path == "keys/c.jwk"
    assert settings.connector_sub == "connector-csv-contacts@node_a"
    assert settings.connector_iss == "https://i"
    assert settings.operator == "node_a"
    assert options.url == "http://127.0.0.1:8123"


def test_operator_falls_back_to_environment_then_local(monkeypatch: pytest.MonkeyPatch) -> None:
    assert options_for().loaded.operator == "local"
    monkeypatch.setenv("DARKMESH_OPERATOR", "alice")
    assert options_for().loaded.operator == "alice"


# ------------------------------------------------------------------------- CLI


def test_cli_dry_run_sends_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(csv_command, [
        "--contacts", str(DEMO / "node_a_contacts.csv"),
        "--interactions", str(write(tmp_path / "i.csv", "email,strength\n,0.3\nA@X.com,0.9\n")),
        "--dry-run", "--url", "http://127.0.0.1:9/",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["dry_run"] is True and summary["url"] == "http://127.0.0.1:9"
    contacts, interactions = summary["datasets"]
    assert contacts["records"] == 2 and contacts["batches"] == 1
    assert contacts["first_records"][0] == {
        "name": "Casey Connector", "email": "casey@connector.com", "org": "Connector LLC",
        "role": "Advisor", "strength": 0.85}
    assert interactions == {"dataset": "interactions", "file": str(tmp_path / "i.csv"),
                            "connector": "csv-interactions", "rows": 2, "records": 1,
                            "skipped": 1, "batches": 1,
                            "first_records": [{"email": "a@x.com", "strength": 0.9}]}


def test_cli_url_defaults_to_settings_listen_url(tmp_path: Path) -> None:
    write(tmp_path / "darkmesh.toml", '[node]\nnode_id = "node_a"\nport = 8555\n')
    result = CliRunner().invoke(csv_command, ["--contacts", str(DEMO / "node_a_contacts.csv"),
                                              "--dry-run"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["url"] == "http://localhost:8555"


def test_cli_needs_a_file_and_a_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(csv_command, ["--node-key", "k"])
    assert result.exit_code == 2 and "give --contacts FILE, --interactions FILE" in result.output
    result = CliRunner().invoke(csv_command, ["--contacts", str(DEMO / "node_a_contacts.csv"),
                                              "--node-key", "k"])
    assert result.exit_code == 2 and "--url is required" in result.output


def test_cli_bad_header_stops_before_sending(tmp_path: Path) -> None:
    bad = write(tmp_path / "contacts.csv", "Casey,casey@x.com\n")
    result = CliRunner().invoke(csv_command, ["--contacts", str(bad), "--url", "http://x.test"])
    assert result.exit_code == 1
    assert f"{bad} has no header row" in result.output


def test_cli_missing_file() -> None:
    result = CliRunner().invoke(csv_command, ["--contacts", "nope.csv", "--dry-run"])
    assert result.exit_code == 1 and "cannot read nope.csv" in result.output


def test_cli_either_without_keys_exits_2() -> None:
    result = CliRunner().invoke(csv_command, ["--contacts", str(DEMO / "node_a_contacts.csv"),
                                              "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "--aauth-private-jwk" in result.output and "--node-key" in result.output


@pytest.fixture
def live_node() -> Iterator[tuple[str, MemoryStore, list[dict[str, Any]]]]:
    """The fake node served by Hypercorn on a loopback port, in a background thread."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    store = MemoryStore()
    seen: list[dict[str, Any]] = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def run() -> None:
        ready.set()
        await serve(fake_node(store, seen), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(5)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/", timeout=0.5)
            break
        except httpx.HTTPError:
            threading.Event().wait(0.05)
    yield url, store, seen
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def test_cli_ingests_over_real_http(live_node: tuple[str, MemoryStore, list[Any]],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, store, seen = live_node
    monkeypatch.setenv("DARKMESH_NODE_KEY", NODE_KEY)
    result = CliRunner().invoke(csv_command, [
        "--contacts", str(DEMO / "node_b_contacts.csv"),
        "--interactions", str(DEMO / "node_b_interactions.csv"),
        "--url", url + "/", "--auth-mode", "hmac", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [(d["dataset"], d["count"]) for d in summary["datasets"]] == [
        ("contacts", 2), ("interactions", 1)]
    records = asyncio.run(_collect(store, "interactions"))
    assert records == [{"email": "taylor@companyx.com", "strength": 0.88}]
    assert len(seen) == 2


async def _collect(store: MemoryStore, dataset: str) -> list[dict[str, Any]]:
    return [r async for r in store.iterate(dataset)]


@pytest.mark.asyncio
async def test_ingest_into_the_real_node_app_and_vault(tmp_path: Path) -> None:
    """The connector against the core's own /darkmesh/ingest, stored in a real vault."""
    from sdl_core import Host
    from sdl_core.node_app import create_node_app

    host = Host.create(
        overrides={"node_id": "node_b", "auth_mode": "hmac", "node_key": NODE_KEY,
                   "data_dir": tmp_path / "data", "vault_key_file": tmp_path / "keys" / "k",
                   "listener": False},
        pm=make_plugin_manager(only={"darkmesh-sdl.vault", "darkmesh-sdl.http"}),
    )
    app = create_node_app(host)
    await host.start()  # ASGITransport sends no lifespan events
    try:
        transport = httpx.ASGITransport(app=app)
        interactions = write(tmp_path / "i.csv", "email,strength\nTaylor@CompanyX.com,0.88\n"
                                                 ",0.1\nlow@x.com,-3\n")
        files = [(CONTACTS, write_contacts(tmp_path / "c.csv", 1200)),
                 (CONTACTS, DEMO / "node_b_contacts.csv"), (INTERACTIONS, interactions)]
        summary = await ingest_files(files, options_for(), 500, transport=transport)
        assert [(d["dataset"], d["sent"], d["batches"], d["count"])
                for d in summary["datasets"]] == [
            ("contacts", 1200, 3, 1200), ("contacts", 2, 1, 1202), ("interactions", 2, 1, 2)]
        records = [r async for r in host.store.iterate("interactions")]
        # The node clamps strengths to [0, 1] (wire-v1 §10.1 item 4); the CSV rule did not.
        assert records == [{"email": "taylor@companyx.com", "strength": 0.88},
                           {"email": "low@x.com", "strength": 0.0}]
        with pytest.raises(IngestError, match="answered 401"):
            await ingest_files([(INTERACTIONS, interactions)], options_for(node_key="nope"), 10,
                               transport=transport)
    finally:
        await host.stop()
