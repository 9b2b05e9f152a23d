"""`parallax demo`: the five-views feature spec, run live, merged with every conflict shown.

Uses the model in PARALLAX_MODEL, or a provider's default model when its key is set; with
neither it runs offline on the scripted answers shipped with the example, and says so first.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from parallax.cli.context import CliContext, run_with_store
from parallax.cli.report import print_summary
from parallax.cli.runs import check_output, execute
from parallax.core.state import RunState
from parallax.engine import api
from parallax.engine.runner import RunOptions
from parallax.examples.feature_spec import plan as feature_spec
from parallax.streams.base import StreamStore

ANSWERS = Path(feature_spec.__file__).with_name("answers.json")


@click.command()
@click.option("--brief", default="Let users export all their data as a CSV file.", show_default=True)
@click.option("--output", "-o", default="feature_spec.json", show_default=True, help="Where to write the spec.")
@click.option("--offline", is_flag=True, help="Use the scripted answers even when a model is configured.")
@click.option("--quiet", "-q", is_flag=True, help="No live lanes.")
@click.pass_context
def demo(ctx: click.Context, brief: str, output: str, offline: bool, quiet: bool) -> None:
    """Five agents write one feature spec in parallel; the merge surfaces their conflicts."""
    check_output(output)
    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]
    model, why = cli.settings.default_model()
    console = Console()
    if offline or model is None:
        model = f"scripted:{ANSWERS}"
        reason = "--offline" if offline else why
        console.print(f"[bold]Offline:[/] scripted answers shipped with the example ({reason}).", highlight=False)
    else:
        console.print(f"[bold]Online:[/] model {model} (from {why}).", highlight=False)
    plan = feature_spec.build(brief=brief, model=model)

    async def action(store: StreamStore) -> RunState:
        run_id = await api.create_run(store, plan, source="parallax.examples.feature_spec.plan:build")
        console.print(f"run [bold]{run_id}[/]: 5 views of “{brief}”, then one merge  (store {cli.store_url})")
        return await execute(store, run_id, RunOptions(), console, quiet)

    state = run_with_store(ctx, action)
    merged = state.result if isinstance(state.result, dict) else {}
    Path(output).write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    print_summary(console, state)
    console.print(f"spec written to [bold]{output}[/]; inspect with: parallax inspect {state.run_id}")
    if state.status != "succeeded":
        raise SystemExit(1)
