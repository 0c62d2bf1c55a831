"""Every ``darkmesh …`` command line shown in a code block of ``docs/*.md`` or
``SKILL.md`` names commands, sub-commands and options the CLI really has.

The click tree is the real one: ``sdl_core.cli.main`` with every installed plugin (the
process environment's plugin switches are ignored). A line whose top-level command
belongs to a plugin that is not installed in this environment is skipped, so the test
passes with the core alone (tox env ``core``) and checks everything in ``all``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pluggy
import pytest

from sdl_core.cli import CliState, main
from sdl_core.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "SKILL.md"]

#: Commands that plugins add, by the entry-point name of the distribution adding them.
#: A doc line using one of these is checked only when that plugin is installed.
PLUGIN_COMMANDS: dict[tuple[str, ...], str] = {
    ("intro",): "darkmesh-warm-intro",
    ("demo",): "darkmesh-warm-intro",
    ("keygen",): "darkmesh-aauth",
    ("trust",): "darkmesh-aauth",
    ("neotoma",): "darkmesh-neotoma",
    ("ingest", "neotoma"): "darkmesh-neotoma",
    ("mcp",): "darkmesh-sdl.mcp",
}
SHELL_OPERATORS = {"&&", "||", "|", ";", "&", "(", ")", "<", ">", ">>", "2>", "2>&1"}
PLACEHOLDER = re.compile(r"<[^<>\s]+>")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ------------------------------------------------------------------ extraction


def code_block_lines(text: str) -> Iterator[str]:
    """Lines inside fenced code blocks, with ``\\`` continuations joined."""
    inside = False
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def invocations(line: str) -> list[list[str]]:
    """The argument lists of every ``darkmesh`` invocation on a shell line."""
    lexer = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", line), posix=True,
                        punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in SHELL_OPERATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for segment in segments:
        words = [w for w in segment if w != "$"]
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words and Path(words[0]).name == "darkmesh":
            found.append(words[1:])
    return found


def documented_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in DOC_FILES:
        if not path.exists():
            continue
        for line in code_block_lines(path.read_text(encoding="utf-8")):
            if "darkmesh" not in line:
                continue
            for args in invocations(line):
                out.append((path.name, line.strip(), args))
    return out


# ------------------------------------------------------------------ resolution


class UnknownCommand(AssertionError):
    pass


def _find_option(params: list[click.Parameter], name: str) -> click.Option | None:
    for param in params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def resolve(args: list[str], pm: pluggy.PluginManager) -> tuple[list[str], bool]:
    """Walk ``args`` through the click tree.

    :returns: the command path and whether it was skipped (plugin not installed).
    :raises UnknownCommand: an unknown command, sub-command or option.
    """
    ctx = click.Context(main, info_name="darkmesh", obj=CliState(_pm=pm))
    command: click.Command = main
    path: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            option = _find_option(command.get_params(ctx), name)
            if option is None:
                raise UnknownCommand(f"darkmesh {' '.join(path)}: no option {name}")
            if not (option.is_flag or option.count) and "=" not in token:
                index += 1  # its value
            continue
        if not isinstance(command, click.Group):
            continue  # a positional argument of a leaf command
        sub = command.get_command(ctx, token)
        if sub is None:
            owner = PLUGIN_COMMANDS.get((*path, token))
            if owner is not None and pm.get_plugin(owner) is None:
                return [*path, token], True
            raise UnknownCommand(f"darkmesh {' '.join([*path, token])}: no such command "
                                 f"(choices: {', '.join(command.list_commands(ctx))})")
        path.append(token)
        ctx = click.Context(sub, info_name=token, parent=ctx)
        command = sub
    return path, False


# ------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def plugin_manager() -> pluggy.PluginManager:
    # Every installed plugin, whatever DARKMESH_*_PLUGINS the shell has.
    return make_plugin_manager(environ={})


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    files = {name for name, _, _ in COMMANDS}
    assert "operator-guide.md" in files and "SKILL.md" in files
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize(("doc", "line", "args"), COMMANDS,
                         ids=[f"{d}:{' '.join(a[:3])}" for d, _, a in COMMANDS])
def test_documented_command_exists(doc: str, line: str, args: list[str],
                                   plugin_manager: pluggy.PluginManager) -> None:
    try:
        path, skipped = resolve(args, plugin_manager)
    except UnknownCommand as exc:
        pytest.fail(f"{doc}: `{line}`: {exc}")
    if skipped:
        pytest.skip(f"`darkmesh {' '.join(path)}` belongs to a plugin not installed here")
    assert path, f"{doc}: `{line}` names no command"


def test_resolver_refuses_unknown_commands_and_options(
        plugin_manager: pluggy.PluginManager) -> None:
    with pytest.raises(UnknownCommand, match="no such command"):
        resolve(["nosuch"], plugin_manager)
    with pytest.raises(UnknownCommand, match="no such command"):
        resolve(["node", "start"], plugin_manager)
    with pytest.raises(UnknownCommand, match="no option --frobnicate"):
        resolve(["status", "--frobnicate"], plugin_manager)
    assert resolve(["--config", "x.toml", "relay", "serve", "--port", "9000"],
                   plugin_manager) == (["relay", "serve"], False)


def test_extraction_handles_shell_syntax() -> None:
    text = ("```sh\n"
            "DARKMESH_X=1 darkmesh status --timeout 3   # comment darkmesh nosuch\n"
            "pip install . && .venv/bin/darkmesh demo\n"
            "darkmesh trust remove <thumbprint> \\\n    --relay\n"
            "```\n"
            "darkmesh outside-a-block\n")
    found = [args for line in code_block_lines(text) for args in invocations(line)]
    assert found == [["status", "--timeout", "3"], ["demo"],
                     ["trust", "remove", "PLACEHOLDER", "--relay"]]
