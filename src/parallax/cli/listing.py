"""`parallax runs`: kept apart from the other run commands so that it imports no engine."""

from __future__ import annotations

import json

import click

from parallax.cli.context import MAX_INT, run_with_store
from parallax.engine.listing import RunSummary, list_runs
from parallax.streams.base import StreamStore


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_INT))
@click.pass_context
def runs(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List runs, oldest first."""

    async def action(store: StreamStore) -> list[RunSummary]:
        return await list_runs(store, limit)

    summaries = run_with_store(ctx, action, create=False)
    for summary in summaries:
        if as_json:
            click.echo(json.dumps(summary.__dict__))
        else:
            click.echo(f"{summary.run_id}\t{summary.status}\t{summary.name}\t{summary.steps} steps")
    stalled = [s.run_id for s in summaries if s.status == "stalled"]
    if stalled and not as_json:  # on stderr: stdout stays one run per line
        click.echo(
            f"{len(stalled)} stalled (unfinished, its coordinator gone): continue with `parallax resume {stalled[-1]}`",
            err=True,
        )
