"""What a run did, in words a person reads: the end-of-run summary and `parallax inspect`.
Apart from the run commands so that `parallax inspect` loads a run without the engine."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape

from parallax.cli.context import run_with_store
from parallax.core.state import RunState, describe
from parallax.engine.heartbeat import Pulse, pulse
from parallax.engine.runs import load_run
from parallax.report import build_report, terminal_lines
from parallax.streams.base import StreamStore

_STYLES = {"heading": "bold", "subheading": "bold dim", "ok": "bold green", "bad": "bold red", "": ""}


def print_summary(console: Console, state: RunState) -> None:
    """What the run found, for a person (`parallax.report`): the synthesis, each cohort's final
    position, divergence, the merged result, conflicts, failures, cost."""
    for line, style in terminal_lines(build_report(state)):
        text = escape(line)
        console.print(f"[{_STYLES[style]}]{text}[/]" if _STYLES[style] else text, highlight=False, soft_wrap=True)


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def inspect(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Steps, status, costs, confidence, conflicts and result of a run."""

    async def action(store: StreamStore) -> tuple[RunState, Pulse | None]:
        state = await load_run(store, run_id)
        return state, (None if state.finished else await pulse(store, run_id))

    state, last = run_with_store(ctx, action, create=False)
    stalled = last is not None and last.stalled()
    if as_json:
        view = describe(state)
        view["stalled"] = stalled
        click.echo(json.dumps(view, ensure_ascii=False, default=str))
        return
    console = Console()
    if last is not None and stalled:
        console.print(
            f"[bold yellow]stalled[/]: no word from its coordinator ({last.coordinator}) for {last.age_s():.0f} s; "
            f"continue it with `parallax resume {state.run_id}`",
            highlight=False,
        )
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
    console.print()
    print_summary(console, state)
