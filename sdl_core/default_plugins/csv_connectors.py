"""Built-in connector ``csv``: ``darkmesh ingest csv --contacts FILE --interactions FILE``."""

from __future__ import annotations

from collections.abc import Iterator

from sdl_core.connectors.csv import csv_command
from sdl_core.plugins import hookimpl
from sdl_core.specs import ConnectorSpec


@hookimpl(trylast=True)
def darkmesh_register_connectors() -> Iterator[ConnectorSpec]:
    yield ConnectorSpec(
        name="csv",
        command=csv_command,
        description="Contacts and interactions from CSV files (identities csv-contacts, "
        "csv-interactions)",
    )
