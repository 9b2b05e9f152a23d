"""Running control steps (the plan grows) and sub-runs (a breakout on its own streams).

A control step's decision is pure (`core/expand.py`); here it is carried out. Stream work a
decision needs (forking or merging cohort streams) is done first and is idempotent, then the
decision is recorded in one atomic append: `step.started`, `steps.added`, any conflicts and the
divergence, `step.output`. A crash before that append leaves nothing decided, and the resumed
run decides again from the same state, to the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from parallax.core import events as ev
from parallax.core.errors import RunNotFound, StreamExists, StreamNotFound
from parallax.core.events import Event
from parallax.core.expand import Expansion, cohort_stream, expand
from parallax.core.plan import Plan, Step
from parallax.core.template import render
from parallax.engine.control import ControlLog
from parallax.streams.base import AppendInput, AppendRecord, StreamStore

if TYPE_CHECKING:
    from parallax.engine.runner import Runner


async def run_control(log: ControlLog, step: Step) -> None:
    outcome = expand(step, log.state)
    started = Event(ev.STEP_STARTED, {"attempt": 1, "kind": "control"}, step=step.id)
    if outcome.error is not None:
        await log.emit(started, Event(ev.STEP_FAILED, {"error": outcome.error, "final": True}, step=step.id))
        return
    await _stream_work(log.store, log.run_id, outcome)
    events = [started]
    if outcome.add or outcome.rewire or outcome.session is not None or outcome.applied:
        events.append(
            Event(
                ev.STEPS_ADDED,
                {
                    "steps": [s.model_dump(mode="json", by_alias=True, exclude_defaults=True) for s in outcome.add],
                    "rewire": outcome.rewire,
                    "session": outcome.session,
                    "applied": {str(k): v for k, v in outcome.applied.items()},
                },
                step=step.id,
            )
        )
    events += [
        Event(ev.CONFLICT_FOUND, {"conflict": c.model_dump(mode="json")}, step=step.id) for c in outcome.conflicts
    ]
    if outcome.divergence is not None:
        events.append(Event(ev.DIVERGENCE, outcome.divergence, step=step.id))
    events.append(
        Event(ev.STEP_OUTPUT, {"output": outcome.output, "confidence": outcome.confidence, "attempt": 1}, step=step.id)
    )
    await log.emit(*events)


async def _stream_work(store: StreamStore, run_id: str, outcome: Expansion) -> None:
    for source, into, at in outcome.forks:
        src, dst = cohort_stream(run_id, source), cohort_stream(run_id, into)
        try:
            tail = (await store.check_tail(src)).seq_num
            await store.fork(src, dst, tail if at is None else min(at, tail))
        except StreamNotFound:
            await _create_quietly(store, dst)
        except StreamExists:
            pass  # done before a crash
    for sources, into in outcome.merges:
        dst = cohort_stream(run_id, into)
        try:
            if (await store.check_tail(dst)).seq_num > 0:
                continue  # done before a crash
        except StreamNotFound:
            pass
        records: list[Any] = []
        for source in sources:
            try:
                records += await store.read_all(cohort_stream(run_id, source))
            except StreamNotFound:
                continue
        records.sort(key=lambda r: (r.timestamp, r.seq_num))
        batch = [AppendRecord(body=r.body, headers=r.headers) for r in records]
        if not batch:
            await _create_quietly(store, dst)
        for i in range(0, len(batch), 1000):
            await store.append(dst, AppendInput(batch[i : i + 1000]))


async def _create_quietly(store: StreamStore, stream: str) -> None:
    with contextlib.suppress(StreamExists):
        await store.create(stream)


async def run_subrun(runner: Runner, step: Step) -> None:
    """Run `step.subrun.plan` as run `<run>.<step>` (resuming it if a crash left it half done)
    and record its result as this step's output."""
    from parallax.engine.api import create_run, load_run
    from parallax.engine.runner import Runner, RunOptions

    assert step.subrun is not None
    context = runner.context_for(step)
    inputs = {k: render(v, context) if isinstance(v, str) else v for k, v in step.subrun.inputs.items()}
    plan = Plan.model_validate(step.subrun.plan)
    plan = plan.model_copy(update={"inputs": {**plan.inputs, **inputs}}).revalidated()
    child = f"{runner.run_id}.{step.id}"
    await runner.log.emit(Event(ev.STEP_STARTED, {"attempt": 1, "kind": "subrun", "run": child}, step=step.id))
    try:
        await load_run(runner.store, child)
    except RunNotFound:
        await create_run(runner.store, plan, run_id=child, source=f"breakout of {runner.run_id}/{step.id}")
    options = RunOptions(
        concurrency=runner.options.concurrency,
        use_cache=runner.options.use_cache,
        workdir=runner.options.workdir,
        parent_env=runner.options.parent_env,
    )
    state = await Runner(runner.store, child, options).run()
    if state.status == "succeeded":
        output = {"run": child, "result": state.result, "conflicts": len(state.conflicts)}
        await runner.log.emit(
            Event(ev.STEP_OUTPUT, {"output": output, "usage": state.usage.as_dict(), "attempt": 1}, step=step.id)
        )
    else:
        error = f"sub-run {child} ended {state.status}"
        await runner.log.emit(
            Event(ev.STEP_FAILED, {"error": error, "final": True, "usage": state.usage.as_dict()}, step=step.id)
        )


async def run_tasks_step(runner: Runner, step: Step) -> None:
    """A task graph: `workers` local workers claim and run tasks (others may join from other
    processes with `parallax worker RUN`), then the succeeded branches are integrated. The step
    succeeds when every task merged, without conflicts, and the graph's verify passed."""
    import secrets
    from pathlib import Path

    from parallax.core.tasks import TaskGraphSpec
    from parallax.engine.tasks import TaskRunOptions, integrate, run_worker

    assert step.tasks is not None
    spec = TaskGraphSpec.model_validate(step.tasks)
    repo = runner.options.workdir or Path.cwd()
    options = TaskRunOptions(repo=repo, parent_env=runner.options.parent_env)
    await runner.log.emit(Event(ev.STEP_STARTED, {"attempt": 1, "kind": "tasks"}, step=step.id))
    prefix = f"{runner.options.coordinator}-{secrets.token_hex(2)}"
    inputs = runner.plan.inputs
    await asyncio.gather(
        *(run_worker(runner.store, runner.run_id, f"{prefix}-w{i}", spec, options, inputs) for i in range(spec.workers))
    )
    # With a review queue, each task was merged when a person approved it (`parallax review`);
    # integrating now only picks up nothing or runs the final verify.
    result = await integrate(runner.store, runner.run_id, spec, options)
    await runner.log.sync()
    board = _board(runner, spec)
    statuses = {t.id: t.status for t in board.tasks.values()}
    output = {
        "branch": result.branch,
        "head": result.head,
        "merged": result.merged,
        "tasks": statuses,
        "errors": {t.id: t.error for t in board.tasks.values() if t.error},
        "verify": result.verify,
    }
    events = [Event(ev.CONFLICT_FOUND, {"conflict": c.model_dump(mode="json")}, step=step.id) for c in result.conflicts]
    problems = [f"{t} {s}" for t, s in statuses.items() if s != "merged"]
    if result.conflicts:
        problems.append(f"{len(result.conflicts)} merge conflict(s)")
    if result.verify is not None and result.verify["exit"] != 0:
        problems.append(f"verify exited {result.verify['exit']}")
    events.append(Event("tasks.integrated", output, step=step.id))
    if problems:
        events.append(Event(ev.STEP_FAILED, {"error": "; ".join(problems), "final": True}, step=step.id))
    else:
        events.append(Event(ev.STEP_OUTPUT, {"output": output, "attempt": 1}, step=step.id))
    await runner.log.emit(*events)


def _board(runner: Runner, spec: Any) -> Any:
    from parallax.core.tasks import TaskBoard

    return runner.state.tasks or TaskBoard.of(spec)
