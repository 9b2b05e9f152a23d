"""The `parallax` command: a group per module, sharing one `--store`."""

from __future__ import annotations

import click

from parallax import __version__
from parallax.cli.context import CliContext
from parallax.cli.demo import demo
from parallax.cli.streams import streams
from parallax.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    settings = Settings.from_env()
    ctx.obj = CliContext(store_url=store_url or settings.default_store_url(), settings=settings)


cli.add_command(streams)
cli.add_command(demo)


def main() -> None:
    cli(prog_name="parallax")
