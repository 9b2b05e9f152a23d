"""What a run did, in words a person reads: the end-of-run summary and `parallax inspect`.
Apart from the run commands so that `parallax inspect` loads a run without the engine."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape

from parallax.cli.context import run_with_store
from parallax.core.state import RunState, describe
from parallax.engine.runs import load_run
from parallax.streams.base import StreamStore


def print_summary(console: Console, state: RunState) -> None:
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(state.status, "magenta")
    usage = state.usage
    console.print(
        f"[bold]run {state.run_id}[/] [{style}]{state.status}[/]  "
        f"{sum(1 for s in state.steps.values() if s.status == 'succeeded')}/{len(state.steps)} steps  "
        f"{len(state.conflicts)} conflict(s)  {usage.total_tokens} tokens  ${usage.cost_usd:.4f}",
        highlight=False,
    )
    for conflict in state.conflicts:
        console.print(f"  [yellow]•[/] {escape(conflict.describe())}", highlight=False)
    for step in state.steps.values():
        if step.status == "failed":
            console.print(f"  [red]✗[/] {step.id}: {escape(step.error or '')}", highlight=False)


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def inspect(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Steps, status, costs, confidence, conflicts and result of a run."""

    async def action(store: StreamStore) -> RunState:
        return await load_run(store, run_id)

    state = run_with_store(ctx, action, create=False)
    if as_json:
        click.echo(json.dumps(describe(state), ensure_ascii=False, default=str))
        return
    console = Console()
    view = describe(state)
    console.print(f"[bold]{state.run_id}[/]  plan {view['plan']} ({state.plan_hash[:12]})  {state.status}")
    if state.forked_from:
        console.print(f"forked from {state.forked_from[0]} at {state.forked_from[1]}")
    for step in view["steps"]:
        usage = step["usage"]
        conf = "" if step["confidence"] is None else f" conf {step['confidence']:.2f}"
        cost = (
            f" {usage['input_tokens'] + usage['output_tokens']} tok ${usage['cost_usd']:.4f}"
            if usage["requests"]
            else ""
        )
        took = f" {step['duration_ms'] / 1000:.2f}s" if step["duration_ms"] is not None else ""
        detail = step["error"] or step["skipped_reason"] or ""
        console.print(
            f"  {step['id']:<16} {step['status']:<10} x{step['attempts']}{took}{cost}{conf}"
            f"{' (cached)' if step['cached'] else ''} {escape(detail)}",
            highlight=False,
        )
    session = state.sessions.get("moderator")
    if session is not None:
        console.print(
            f"cohorts: {', '.join(session['active']) or 'none active'} (all: {', '.join(session['members'])}); "
            f"round {session['rounds']}{', concluded' if session['concluded'] else ''}",
            highlight=False,
        )
        for line in session["log"][-10:]:
            console.print(f"  {escape(line)}", highlight=False)
    for request in view["requests"]:
        console.print(
            f"request {request['seq']} by {request.get('by')}: {request.get('action', {}).get('action')} -> "
            f"{escape(request['outcome'])}",
            highlight=False,
        )
    if state.divergence is not None and state.divergence.get("divergence") is not None:
        pairs = ", ".join(f"{k} {v:.2f}" for k, v in state.divergence["similarity"].items())
        console.print(f"divergence {state.divergence['divergence']:.2f} (similarity: {pairs})", highlight=False)
    print_summary(console, state)
    if state.result is not None:
        text = json.dumps(state.result, indent=2, ensure_ascii=False, default=str)
        console.print(escape(text if len(text) < 4000 else text[:4000] + "\n…"), highlight=False)
