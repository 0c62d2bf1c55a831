"""Built-in relay backend ``sqlite``: the durable embedded default.

The file is ``relay.db`` in the relay's ``data_dir`` (``DARKMESH_RELAY_DATA_DIR``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdl_core.plugins import hookimpl
from sdl_core.specs import RelayBackendSpec

DB_FILE_NAME = "relay.db"


def _sqlite_backend(relay_host: Any, settings: Any) -> Any:
    # Imported here so loading the plugin stays cheap and free of I/O.
    from sdl_core.relay.sqlite_backend import SqliteRelayBackend

    return SqliteRelayBackend(Path(relay_host.settings.data_dir) / DB_FILE_NAME)


@hookimpl(trylast=True)
def darkmesh_register_relay_backends() -> Iterator[RelayBackendSpec]:
    yield RelayBackendSpec(
        name="sqlite",
        factory=_sqlite_backend,
        description="one SQLite file in the relay data_dir; durable across restarts",
    )
