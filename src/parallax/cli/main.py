"""The `parallax` command: a group per module, sharing one `--store`."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import click

from parallax import __version__, telemetry
from parallax.agents.cli import register_presets
from parallax.cli.context import EXIT_USAGE, CliContext, exit_code_for, fail
from parallax.cli.demo import demo
from parallax.cli.live import COMMANDS as LIVE_COMMANDS
from parallax.cli.planner import COMMANDS as PLANNER_COMMANDS
from parallax.cli.runs import COMMANDS as RUN_COMMANDS
from parallax.cli.serve import COMMANDS as SERVE_COMMANDS
from parallax.cli.streams import streams
from parallax.cli.tasks import COMMANDS as TASK_COMMANDS
from parallax.core.errors import ParallaxError
from parallax.settings import Settings


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
    try:
        settings = Settings.load()
    except ParallaxError as e:
        fail(str(e), exit_code_for(e))
    register_presets(settings.presets)
    ctx.obj = CliContext(store_url=store_url or settings.default_store_url(), settings=settings)


@click.group()
def config() -> None:
    """The effective configuration (parallax.toml files, PARALLAX_* variables)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Every setting, its value, and where that value came from."""
    settings: Settings = ctx.find_object(CliContext).settings  # type: ignore[union-attr]
    rows = settings.effective()
    if as_json:
        click.echo(json.dumps([{"key": k, "value": v, "from": w} for k, v, w in rows], indent=2, default=str))
        return
    for key, value, where in rows:
        shown = "-" if value is None else json.dumps(value) if not isinstance(value, str) else value
        click.echo(f"{key:22} {shown}    ({where})")


for command in (*RUN_COMMANDS, *LIVE_COMMANDS, *TASK_COMMANDS, *PLANNER_COMMANDS, *SERVE_COMMANDS, streams, demo):
    cli.add_command(command)
cli.add_command(config)


def main() -> None:
    telemetry.configure_from_env(os.environ)  # off unless OTEL_* asks for traces
    cli(prog_name="parallax")
