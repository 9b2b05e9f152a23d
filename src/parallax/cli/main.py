"""The `parallax` command: a group per module, sharing one `--store`.

Commands are loaded when they are used (`LAZY`: name -> module, attribute, one-line help), so
`parallax --help` or `parallax runs` imports neither the engine nor the agents, the server or
the planner: start-up is the interpreter, click and the one command's own imports.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

import click

from parallax import __version__, telemetry
from parallax.cli.context import EXIT_USAGE, CliContext, exit_code_for, fail
from parallax.core.errors import ParallaxError

# name: (module under parallax.cli, attribute, the one line `parallax --help` shows)
LAZY: dict[str, tuple[str, str, str]] = {
    "agents": ("runs", "agents", "What is known about agents across runs."),
    "apply": ("tasks", "apply", "Merge RUN_ID's integration branch into the current branch (only when you ask)."),
    "approve": ("runs", "approve", "Approve (or --reject) a run's approval gate."),
    "cancel": ("runs", "cancel", "Ask a running run to stop; its coordinator records it as cancelled."),
    "compile": ("runs", "compile", "Print the Plan IR a target compiles to, and its content hash."),
    "demo": ("demo", "demo", "Five agents write one feature spec in parallel; the merge surfaces their conflicts."),
    "diff": ("tasks", "diff", "What TASK changed, from the commit it started at (run in the repository)."),
    "fork": ("runs", "fork", "Start a new run from the first SEQ control records of RUN_ID."),
    "graph": ("planner", "graph", "A knowledge graph of a git repository: imports, tests, definitions, co-change."),
    "inspect": ("report", "inspect", "Steps, status, costs, confidence, conflicts and result of a run."),
    "join": ("live", "join", "Take part in one cohort of a live run: its messages stream here, your lines go to it."),
    "mcp": ("serve", "mcp", "Serve Parallax to a coding agent over the Model Context Protocol (stdio)."),
    "message": ("live", "message", "Send TEXT to a cohort, an agent or the moderator of a live run (their inbox)."),
    "plan": ("planner", "plan", "Decompose GOAL over a repository into a task graph with disjoint write sets."),
    "research": (
        "research",
        "research",
        "Research QUESTION with isolated cohorts of agents and a moderator; print the answer.",
    ),
    "resume": ("runs", "resume", "Continue a run from its log: steps with recorded output are never run again."),
    "review": ("tasks", "review", "The review queue: finished tasks wait here when the graph says `review: true`."),
    "run": ("runs", "run", "Run TARGET (pattern.yaml, file.py, file.py:attr or module:attr) and follow it live."),
    "runs": ("listing", "runs", "List runs, oldest first."),
    "schema": ("runs", "schema", "Print the JSON Schema of YAML patterns (point your editor at it)."),
    "serve": ("serve", "serve", "Serve the HTTP API and the live dashboard."),
    "streams": ("streams", "streams", "Read and write streams directly."),
    "tail": ("runs", "tail", "Follow a run live (one lane per agent) until it finishes."),
    "tasks": ("tasks", "tasks", "The task board of RUN_ID."),
    "topology": ("live", "topology", "Change live cohorts of a run: applied at its next decision, recorded."),
    "worker": ("tasks", "worker", "Serve submitted runs: claim agent attempts, coordinate runs nobody coordinates."),
}


class ParallaxGroup(click.Group):
    """Turns any Parallax error raised by a subcommand, and any misuse of the command line, into
    one line (`error: ...`) and its exit code (2 for misuse). Every argument must be UTF-8:
    Parallax records what it is given as text (on the log, in plans), so an argument that is
    not (on Linux, its bytes arrive as lone surrogates) is refused before anything runs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for index, arg in enumerate(args, 1):
            if _NOT_UTF8.search(arg):
                shown = arg.encode("utf-8", "surrogateescape")
                fail(f"argument {index} is not valid UTF-8: {shown!r}", EXIT_USAGE)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            fail(_usage_line(e), EXIT_USAGE)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*LAZY, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return self.commands.get(cmd_name)
        module, attribute, _ = LAZY[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"parallax.cli.{module}"), attribute)
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from `LAZY`'s one-line help: listing commands imports none of them."""
        rows = [(name, LAZY[name][2]) for name in sorted(LAZY)]
        rows += [(name, command.get_short_help_str()) for name, command in sorted(self.commands.items())
                 if name not in LAZY]  # fmt: skip
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ParallaxError as e:
            fail(str(e), exit_code_for(e))
        except click.UsageError as e:
            fail(_usage_line(e), EXIT_USAGE)


_NOT_UTF8 = re.compile("[\ud800-\udfff]")


def _usage_line(error: click.UsageError) -> str:
    message = " ".join(error.format_message().split())
    return f"{message} (see: {error.ctx.command_path} -h)" if error.ctx is not None else message


# Commands that only read what is stored: they run no agent, so a configuration's presets are
# not loaded for them (loading pulls in the agents and pydantic, 50 ms of start-up).
READ_ONLY = frozenset({"runs", "streams", "inspect", "tail"})


@click.group(cls=ParallaxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Stream store URL (sqlite:///abs.db, sqlite:rel.db, memory:). "
    "Default: $PARALLAX_STORE, else .parallax/parallax.db under the project root.",
)
@click.version_option(__version__, prog_name="parallax")
@click.pass_context
def cli(ctx: click.Context, store_url: str | None) -> None:
    """Run AI agents in parallel, coordinated through durable streams."""
    from parallax.settings import Settings  # lazily: `--help` and `--version` need no settings

    try:
        settings = Settings.load()
    except ParallaxError as e:
        fail(str(e), exit_code_for(e))
    if settings.presets and ctx.invoked_subcommand not in READ_ONLY:
        from parallax.agents.cli import register_presets  # lazily: only a config that names presets

        register_presets(settings.presets)
    ctx.obj = CliContext(store_url=store_url or settings.default_store_url(), settings=settings)


@click.group()
def config() -> None:
    """The effective configuration (parallax.toml files, PARALLAX_* variables)."""


@config.command("show")
@click.argument("target", required=False)
@click.option("--model", "models", multiple=True, metavar="[ROLE=]MODEL", help="As `parallax run --model`.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, target: str | None, models: tuple[str, ...], as_json: bool) -> None:
    """Every setting, its value, and where that value came from; with TARGET (a pattern), the
    model each of its llm/coder agents will use, and why."""
    context = ctx.find_object(CliContext)
    assert context is not None
    settings = context.settings
    rows = settings.effective()
    if target is not None:
        from parallax.launch import model_rows  # lazily: compiling a pattern loads the engine's models

        rows += model_rows(settings, target, models)
    if as_json:
        click.echo(json.dumps([{"key": k, "value": v, "from": w} for k, v, w in rows], indent=2, default=str))
        return
    for key, value, where in rows:
        shown = "-" if value is None else json.dumps(value) if not isinstance(value, str) else value
        click.echo(f"{key:22} {shown}    ({where})")


cli.add_command(config)


def main() -> None:
    telemetry.configure_from_env(os.environ)  # off unless OTEL_* asks for traces
    cli(prog_name="parallax")
