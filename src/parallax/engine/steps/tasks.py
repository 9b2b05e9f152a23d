"""Task-graph steps: local workers claim and run the graph's tasks (others may join from other
processes), then the succeeded branches are integrated and the step's outcome recorded."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import Step
from parallax.core.tasks import TaskBoard, TaskGraphSpec, add_usage
from parallax.engine.integration import integrate
from parallax.engine.steps.context import StepContext
from parallax.engine.tasks import TaskRunOptions, run_worker


async def run_tasks_step(ctx: StepContext, step: Step) -> None:
    """A task graph: `workers` local workers claim and run tasks (others may join from other
    processes with `parallax worker RUN`), then the succeeded branches are integrated. The step
    succeeds when every task merged, without conflicts, and the graph's verify passed."""
    assert step.tasks is not None
    spec = TaskGraphSpec.model_validate(step.tasks)
    repo = ctx.options.workdir or Path.cwd()
    options = TaskRunOptions(repo=repo, parent_env=ctx.options.parent_env)
    await ctx.emit(ev.StepStarted(1, "tasks").event(step.id))
    prefix = f"{ctx.options.coordinator}-{secrets.token_hex(2)}"
    inputs = ctx.plan.inputs
    await asyncio.gather(
        *(run_worker(ctx.store, ctx.run_id, f"{prefix}-w{i}", spec, options, inputs) for i in range(spec.workers))
    )
    # With a review queue, each task was merged when a person approved it (`parallax review`);
    # integrating now only picks up nothing or runs the final verify.
    result = await integrate(ctx.store, ctx.run_id, spec, options)
    await ctx.sync()
    board = _board(ctx, spec)
    statuses = {t.id: t.status for t in board.tasks.values()}
    output = {
        "branch": result.branch,
        "head": result.head,
        "merged": result.merged,
        "tasks": statuses,
        "errors": {t.id: t.error for t in board.tasks.values() if t.error},
        "verify": result.verify,
    }
    resolutions = {t.id: t.resolution.as_dict() for t in board.tasks.values() if t.resolution is not None}
    if resolutions:  # conflicts the graph's resolver took on, resolved (and merged) or not
        output["resolutions"] = resolutions
    events = [ev.ConflictFound(c.model_dump(mode="json")).event(step.id) for c in result.conflicts]
    problems = [f"{t} {s}" for t, s in statuses.items() if s != "merged"]
    if result.conflicts:
        problems.append(f"{len(result.conflicts)} merge conflict(s)")
    if result.verify is not None and result.verify["exit"] != 0:
        problems.append(f"verify exited {result.verify['exit']}")
    events.append(Event("tasks.integrated", output, step=step.id))
    usage: dict[str, float] = {}  # what the tasks' agents used: the run's usage counts it
    for task in board.tasks.values():
        add_usage(usage, task.usage)
    if problems:
        events.append(ev.StepFailed("; ".join(problems), usage=dict(usage)).event(step.id))
    else:
        events.append(ev.StepOutput(output, usage=dict(usage), attempt=1).event(step.id))
    await ctx.emit(*events)


def _board(ctx: StepContext, spec: TaskGraphSpec) -> TaskBoard:
    return ctx.state.tasks or TaskBoard.of(spec)
