"""Built-in command ``darkmesh mcp``: the MCP server for agents (:mod:`sdl_core.mcp_server`).

The command module imports the MCP SDK only when the command runs, so ``darkmesh --help``
works without the ``mcp`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator

from sdl_core.mcp_server import mcp_command
from sdl_core.plugins import hookimpl
from sdl_core.specs import CommandSpec


@hookimpl(trylast=True)
def darkmesh_register_commands() -> Iterator[CommandSpec]:
    yield CommandSpec(
        name="mcp",
        command=mcp_command,
        description="MCP server (stdio or streamable HTTP) with the intro tools, as the operator",
    )
