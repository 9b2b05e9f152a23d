"""Run commands: run, runs, inspect, tail, resume, fork, compile, cancel, approve.

parallax run examples/feature_spec.py:plan --input brief="..."   # live lanes, then a summary
parallax runs                                                    # every run in the store
parallax inspect RUN [--json]
parallax tail RUN                                                # lanes for a run running anywhere
parallax resume RUN
parallax fork RUN --at SEQ [--target file.py:attr]
parallax compile TARGET [--json]
parallax cancel RUN
parallax approve RUN STEP [--reject] [--note TEXT]
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from parallax.cli.context import MAX_INT, CliContext, fail, run_with_store
from parallax.cli.lanes import LaneView
from parallax.cli.report import print_summary
from parallax.core.errors import PlanError
from parallax.core.plan import Plan
from parallax.core.state import RunState, describe
from parallax.engine import api
from parallax.engine.follow import wait_finished
from parallax.engine.runner import Runner, RunOptions
from parallax.launch import load_plan, run_options
from parallax.model_choice import model_choice
from parallax.settings import Settings
from parallax.streams.base import StreamStore


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def parse_inputs(pairs: tuple[str, ...], files: tuple[str, ...]) -> dict[str, Any]:
    """Plan inputs from --input-file JSON objects, then --input KEY=VALUE pairs. Refused with one
    line: a file that is not a UTF-8 JSON object, NaN or Infinity, nesting past the pattern
    limit, integers past 64 bits, NUL or unpaired surrogates in strings."""
    from parallax.patterns.yaml_loader import check_data

    values: dict[str, Any] = {}
    for path in files:
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=_no_constant)
        except (OSError, ValueError, RecursionError) as e:
            reason = (
                e.strerror if isinstance(e, OSError) else "nested too deeply" if isinstance(e, RecursionError) else e
            )
            raise click.BadParameter(f"{path}: {reason}", param_hint="--input-file") from None
        if not isinstance(data, dict):
            raise click.BadParameter(f"{path}: expected a JSON object", param_hint="--input-file")
        try:
            check_data(data, path)
        except PlanError as e:
            raise click.BadParameter(str(e), param_hint="--input-file") from None
        values.update(data)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--input")
        values[key] = value
    return values


async def execute(store: StreamStore, run_id: str, options: RunOptions, console: Console, quiet: bool) -> RunState:
    """Run (or resume) with lanes following along. Cancelled (Ctrl-C, SIGTERM, SIGHUP), it
    cancels the run here and waits for it to wind down (agents' process groups killed) before
    the store closes; the run stays resumable."""
    runner = asyncio.create_task(Runner(store, run_id, options).run())
    try:
        return await _follow(store, run_id, runner, console, quiet)
    except asyncio.CancelledError:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        if not quiet:
            console.print(f"stopped; continue with: parallax resume {run_id}", highlight=False)
        raise


async def _follow(
    store: StreamStore, run_id: str, runner: asyncio.Task[RunState], console: Console, quiet: bool
) -> RunState:
    if quiet:
        return await runner
    view = LaneView(store, run_id, console)
    follower = asyncio.create_task(view.follow())
    try:
        done, _ = await asyncio.wait({runner, follower}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        raise
    if runner in done and runner.exception() is not None:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        raise runner.exception()  # type: ignore[misc]
    state = await runner
    try:
        await asyncio.wait_for(follower, 5)
    except TimeoutError:
        follower.cancel()
    return state


def check_output(output: str | None) -> None:
    """Refuse an --output that cannot be written, before anything runs."""
    if output is None:
        return
    target = Path(output)
    if target.is_dir():
        raise click.BadParameter(f"{output} is a directory", param_hint="--output")
    if not target.resolve().parent.is_dir():
        raise click.BadParameter(f"{output}: there is no directory {target.resolve().parent}", param_hint="--output")


def finish(console: Console, state: RunState, as_json: bool, output: str | None) -> None:
    if output:
        try:
            if output.endswith((".md", ".markdown")):  # the report a person reads
                from parallax.report import build_report, markdown

                Path(output).write_text(markdown(build_report(state)))
            else:
                Path(output).write_text(json.dumps(state.result, indent=2, ensure_ascii=False) + "\n")
        except OSError as e:
            fail(f"run {state.run_id} {state.status}, but its result could not be written to {output}: {e.strerror}")
    if as_json:
        click.echo(json.dumps(describe(state), ensure_ascii=False, default=str))
    else:
        print_summary(console, state)
        if output:
            console.print(f"result written to {output}")
    if state.finished and state.status != "succeeded":
        raise SystemExit(1)  # a run handed over (--detach) and still going is not a failure


def _settings(ctx: click.Context) -> Settings:
    return ctx.find_object(CliContext).settings  # type: ignore[union-attr]


def _options(ctx: click.Context, concurrency: int | None, no_cache: bool, models: tuple[str, ...] = ()) -> RunOptions:
    """Run options from the flags, then parallax.toml / PARALLAX_* (the one launch path).
    `models`: --model on resume/fork, for the llm/coder steps not yet run."""
    chosen = model_choice(models, (None, "")) if models else None
    options = run_options(_settings(ctx), workdir=Path.cwd(), concurrency=concurrency, use_cache=not no_cache)
    options.models = chosen
    return options


@click.command()
@click.argument("target")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="A plan input (repeatable).")
@click.option("--input-file", "input_files", multiple=True, metavar="FILE", help="Inputs from a JSON object.")
@click.option(
    "--model", "models", multiple=True, metavar="[ROLE=]MODEL",
    help="The model for llm/coder agents that name none (before PARALLAX_MODEL and parallax.toml); "
    "ROLE=MODEL for one role or agent, even one that names its own (repeatable).",
)  # fmt: skip
@click.option("--run-id", help="Use this run id instead of a generated one.")
@click.option("--concurrency", type=click.IntRange(1, MAX_INT), help="Override the plan's concurrency cap.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the result cache.")
@click.option("--quiet", "-q", is_flag=True, help="No live lanes.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as JSON.")
@click.option(
    "--output", "-o", metavar="FILE", help="Write the run's report to FILE.md, or its result to FILE as JSON."
)
@click.option("--submit", is_flag=True, help="Hand the run to `parallax worker` processes instead of running it here.")
@click.option("--detach", is_flag=True, help="With --submit: print the run id and return at once.")
@click.option("--estimate", "estimate_only", is_flag=True, help="Print what the run would call and cost, and stop.")
@click.option("--yes", "-y", is_flag=True, help="Spend on paid models without asking (the estimate is still printed).")
@click.pass_context
def run(
    ctx: click.Context,
    target: str,
    inputs: tuple[str, ...],
    input_files: tuple[str, ...],
    models: tuple[str, ...],
    run_id: str | None,
    concurrency: int | None,
    no_cache: bool,
    quiet: bool,
    as_json: bool,
    output: str | None,
    submit: bool,
    detach: bool,
    estimate_only: bool,
    yes: bool,
) -> None:
    """Run TARGET (pattern.yaml, file.py, file.py:attr or module:attr) and follow it live."""
    from parallax.cli.spend import confirm_spend, with_default_budget
    from parallax.estimate import estimate_plan

    if detach and not submit:
        raise click.UsageError("--detach needs --submit (a run started here lives as long as this process)")
    check_output(output)
    settings = _settings(ctx)
    plan = load_plan(settings, target=target, inputs=parse_inputs(inputs, input_files), models=models)
    console = Console(stderr=as_json)
    estimate = estimate_plan(plan)
    if estimate_only:
        if as_json:
            click.echo(json.dumps(estimate.as_dict()))
        else:
            for line in estimate.lines():
                console.print(line, highlight=False, soft_wrap=True)
        return
    budget_set = settings.max_tokens is not None or settings.max_cost_usd is not None
    confirm_spend(console, estimate, yes=yes, budget_set=budget_set or plan.budget.max_cost_usd is not None)
    plan = with_default_budget(plan, estimate)

    async def action(store: StreamStore) -> RunState:
        new_id = await api.create_run(store, plan, run_id=run_id, source=target)
        if not as_json:
            console.print(
                f"run [bold]{new_id}[/] ({plan.name}, {len(plan.steps)} steps, plan {plan.content_hash()[:12]})"
            )
        if submit:
            from parallax.engine.worker import submit as submit_run

            await submit_run(store, new_id)
            if detach:
                if not as_json:
                    console.print(f"submitted; follow it with: parallax tail {new_id}")
                return await api.load_run(store, new_id)
            return await wait_finished(store, new_id)
        return await execute(store, new_id, _options(ctx, concurrency, no_cache), console, quiet or as_json)

    finish(console, run_with_store(ctx, action), as_json, output)


@click.command()
@click.argument("run_id")
@click.option(
    "--model", "models", multiple=True, metavar="[ROLE=]MODEL",
    help="The model for llm/coder steps not yet run (ROLE=MODEL: one role's); the plan's otherwise.",
)  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, MAX_INT))
@click.option("--no-cache", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--output", "-o", metavar="FILE")
@click.pass_context
def resume(
    ctx: click.Context,
    run_id: str,
    models: tuple[str, ...],
    concurrency: int | None,
    no_cache: bool,
    quiet: bool,
    as_json: bool,
    output: str | None,
) -> None:
    """Continue a run from its log: steps with recorded output are never run again."""
    check_output(output)
    console = Console(stderr=as_json)

    async def action(store: StreamStore) -> RunState:
        state = await api.load_run(store, run_id)
        if state.finished:
            return state
        done = sum(1 for s in state.steps.values() if s.status == "succeeded")
        if not as_json:
            console.print(f"resuming {run_id}: {done}/{len(state.steps)} steps already done")
        options = _options(ctx, concurrency, no_cache, models)
        return await execute(store, run_id, options, console, quiet or as_json)

    finish(console, run_with_store(ctx, action, create=False), as_json, output)


@click.command()
@click.argument("run_id")
@click.option("--at", "at_seq", type=click.IntRange(1, MAX_INT), required=True, help="Keep control records below SEQ.")
@click.option("--target", help="A plan (file.py:attr) to use from the fork on: a different model or prompt.")
@click.option("--run-id", "new_id", help="The new run's id.")
@click.option("--no-run", is_flag=True, help="Only create the fork; start it later with `parallax resume`.")
@click.option(
    "--model", "models", multiple=True, metavar="[ROLE=]MODEL",
    help="The model for llm/coder steps not yet run (ROLE=MODEL: one role's); the plan's otherwise.",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fork(
    ctx: click.Context,
    run_id: str,
    at_seq: int,
    target: str | None,
    new_id: str | None,
    no_run: bool,
    models: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """Start a new run from the first SEQ control records of RUN_ID."""
    plan: Plan | None = load_plan(_settings(ctx), target=target, models=models) if target else None
    console = Console(stderr=as_json or no_run)  # with --no-run, stdout is just the new run id

    async def action(store: StreamStore) -> RunState:
        forked = await api.fork_run(store, run_id, at_seq, new_run_id=new_id, plan=plan)
        if not as_json:
            console.print(f"forked {run_id} at {at_seq} into [bold]{forked}[/]")
        if no_run:
            return await api.load_run(store, forked)
        return await execute(store, forked, _options(ctx, None, False, models), console, quiet or as_json)

    state = run_with_store(ctx, action, create=False)
    if no_run:
        click.echo(state.run_id)
        return
    finish(console, state, as_json, None)


@click.command()
@click.argument("run_id")
@click.pass_context
def tail(ctx: click.Context, run_id: str) -> None:
    """Follow a run live (one lane per agent) until it finishes."""
    console = Console()

    async def action(store: StreamStore) -> RunState:
        return await LaneView(store, run_id, console).follow()

    state = run_with_store(ctx, action, create=False)
    print_summary(console, state)


@click.command()
@click.argument("target")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE")
@click.option("--model", "models", multiple=True, metavar="[ROLE=]MODEL", help="As `parallax run --model`.")
@click.option("--json", "as_json", is_flag=True, help="The Plan IR exactly, as canonical JSON.")
@click.pass_context
def compile(ctx: click.Context, target: str, inputs: tuple[str, ...], models: tuple[str, ...], as_json: bool) -> None:
    """Print the Plan IR a target compiles to, and its content hash."""
    plan = load_plan(_settings(ctx), target=target, inputs=parse_inputs(inputs, ()), models=models)
    if as_json:
        click.echo(plan.canonical_json())
        return
    click.echo(f"plan {plan.name}  hash {plan.content_hash()}")
    click.echo(f"concurrency {plan.concurrency}  budget {plan.budget.model_dump(exclude_none=True) or 'none'}")
    if plan.inputs:
        click.echo(f"inputs: {', '.join(sorted(plan.inputs))}")
    for step_id in plan.topological_order():
        step = plan.step(step_id)
        after = f" after {', '.join(step.after)}" if step.after else ""
        if step.agent is not None:
            what = step.agent.model or step.agent.ref or step.agent.command or step.agent.preset or ""
            detail = f"{step.agent.kind} {what}"
        elif step.merge is not None:
            detail = f"merge into {step.merge.target or 'a document'}, {len(step.merge.rules)} rule(s)"
        elif step.gate is not None:
            detail = f"gate {step.gate.kind}"
        elif step.control is not None:
            templates = ", ".join(str(t.get("role") or t.get("id")) for t in step.control.templates)
            detail = f"control {step.control.kind}" + (f" (adds steps from: {templates})" if templates else "")
        elif step.subrun is not None:
            detail = f"sub-run of plan {step.subrun.plan.get('name')}"
        else:
            assert step.tasks is not None
            from parallax.core.tasks import TaskGraphSpec

            graph = TaskGraphSpec.model_validate(step.tasks)
            detail = f"task graph of {len(graph.tasks)} task(s), {graph.workers} worker(s)"
            for task in graph.tasks:
                deps = f" after {', '.join(task.after)}" if task.after else ""
                contracts = f"; owns {', '.join(task.contracts)}" if task.contracts else ""
                click.echo(f"    {task.id:<20} writes {len(task.writes)} path(s){contracts}{deps}")
        extra = f" -> {step.output}" if step.output else ""
        timeout = f" timeout {step.timeout_s:g}s" if step.timeout_s else ""
        click.echo(f"  {step.id:<16} {detail}{extra}{after}{timeout}")


@click.command()
@click.argument("run_id")
@click.option("--reason", default="", help="Why (recorded on the run).")
@click.pass_context
def cancel(ctx: click.Context, run_id: str, reason: str) -> None:
    """Ask a running run to stop; its coordinator records it as cancelled."""

    async def action(store: StreamStore) -> None:
        await api.request_cancel(store, run_id, reason)

    run_with_store(ctx, action, create=False)
    click.echo(f"cancel requested for {run_id}")


@click.command()
@click.argument("run_id")
@click.argument("step")
@click.option("--reject", is_flag=True, help="Reject instead of approving.")
@click.option("--note", default="", help="A note for the record (and for the agents after).")
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.pass_context
def approve(ctx: click.Context, run_id: str, step: str, reject: bool, note: str, by: str | None) -> None:
    """Approve (or --reject) a run's approval gate."""
    who = by or os.environ.get("USER") or "someone"

    async def action(store: StreamStore) -> None:
        await api.decide_gate(store, run_id, step, approved=not reject, by=who, note=note)

    run_with_store(ctx, action, create=False)
    click.echo(f"{'rejected' if reject else 'approved'} {step} of {run_id}")


@click.group()
def agents() -> None:
    """What is known about agents across runs."""


@agents.command("confidence")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agent_confidence(ctx: click.Context, name: str, as_json: bool) -> None:
    """NAME's confidence history (every result it returned with a confidence), oldest first."""
    from parallax.core.errors import StreamNotFound

    async def action(store: StreamStore) -> list[dict[str, Any]]:
        try:
            records = await store.read_all(f"confidence/{name}")
        except StreamNotFound:
            return []
        return [{"timestamp": r.timestamp, **json.loads(r.body)} for r in records]

    history = run_with_store(ctx, action, create=False)
    if as_json:
        for entry in history:
            click.echo(json.dumps(entry))
        return
    if not history:
        click.echo(f"no confidence recorded for {name!r}")
        return
    for entry in history:
        click.echo(f"{entry['run']}\t{entry['model']}\tattempt {entry['attempt']}\t{entry['confidence']:.2f}")
    mean = sum(e["confidence"] for e in history) / len(history)
    click.echo(f"{len(history)} result(s), mean confidence {mean:.2f}")


@click.command()
def schema() -> None:
    """Print the JSON Schema of YAML patterns (point your editor at it)."""
    from parallax.patterns.schema import PATTERN_SCHEMA

    click.echo(json.dumps(PATTERN_SCHEMA, indent=2))
