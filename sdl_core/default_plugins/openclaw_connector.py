"""Built-in connector ``openclaw``: ``darkmesh ingest openclaw`` (``spec/openclaw.md``)."""

from __future__ import annotations

from collections.abc import Iterator

from sdl_core.connectors.openclaw import openclaw_command
from sdl_core.plugins import hookimpl
from sdl_core.specs import ConnectorSpec


@hookimpl(trylast=True)
def darkmesh_register_connectors() -> Iterator[ConnectorSpec]:
    yield ConnectorSpec(
        name="openclaw",
        command=openclaw_command,
        description="Contacts scored from OpenClaw events (identity openclaw-sync)",
    )
