"""Listing runs from what `run.created` and the last control record say: the plan is never
read (it may be megabytes, or a blob), so listing costs the same whatever the runs' sizes, and
this module imports no more than the stores and the event codec (`parallax runs` starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from parallax.core import events as ev
from parallax.core.errors import BlobNotFound, StreamError
from parallax.core.events import Event
from parallax.engine.heartbeat import pulse
from parallax.streams.base import ReadLimit, StreamStore, TailOffset
from parallax.streams.folded import record_event


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    status: str
    created_at: int
    steps: int  # the plan's steps; grown ones included once the run says (finished, or folded)
    shape: str = ""  # tasks, cohorts, fanout or graph (core.plan.plan_shape); "" when not recorded
    succeeded: int = 0  # steps that succeeded, when known
    finished_at: int | None = None
    tokens: int = 0
    cost_usd: float = 0.0


async def list_runs(store: StreamStore, limit: int = 1000, *, fold_unfinished: bool = False) -> list[RunSummary]:
    """The runs, oldest first. A finished run's counts come from its `run.finished`; with
    `fold_unfinished`, an unfinished run (there are few) is folded for its live step counts and
    cost (a run finished before `run.finished` carried its counts shows its plan's count)."""
    out: list[RunSummary] = []
    start_after = ""
    while len(out) < limit:
        infos = await store.list("runs/", start_after=start_after, limit=1000)
        if not infos:
            break
        start_after = infos[-1].name
        for info in infos:
            if not info.name.endswith("/control") or info.name.count("/") != 2:
                continue
            run_id = info.name.split("/")[1]
            first = await store.read(info.name, limit=ReadLimit(count=1))
            last = await store.read(info.name, TailOffset(1))
            created = next((e for r in first.records if (e := record_event(r)) is not None), None)
            ended = next((e for r in last.records if (e := record_event(r)) is not None), None)
            try:
                summary = await _summary(store, run_id, info.created_at, created, ended)
                if fold_unfinished and summary.finished_at is None and summary.status != "?":
                    summary = await _folded(store, summary)
                out.append(summary)
            except (ValueError, TypeError, KeyError, AttributeError, BlobNotFound):  # not a run Parallax wrote
                out.append(RunSummary(run_id, "?", "?", info.created_at, 0))
    return sorted(out, key=lambda r: r.created_at)[-limit:]


async def planned_steps(store: StreamStore, control_stream: str) -> int:
    """How many steps a run's plan has, as its `run.created` says (0 when it does not say)."""
    try:
        first = await store.read(control_stream, limit=ReadLimit(count=1))
    except StreamError:
        return 0
    created = next((e for r in first.records if (e := record_event(r)) is not None), None)
    if created is None or created.type != ev.RUN_CREATED:
        return 0
    steps = created.data.get("steps")
    return steps if isinstance(steps, int) else 0


async def _summary(store: StreamStore, run_id: str, at: int, created: Event | None, ended: Event | None) -> RunSummary:
    """What the first and last control records say of a run (pydantic's ValidationError is a
    ValueError: a plan that does not validate reads as "?")."""
    if created is None or created.type != ev.RUN_CREATED:
        return RunSummary(run_id, "?", "?", at, 0)
    if "name" in created.data:  # the summary run.created carries: the plan is not read
        name, steps = str(created.data["name"]), int(created.data.get("steps") or 0)
    else:  # written before it did: fold it (this reads the plan)
        from parallax.core.state import fold
        from parallax.engine.control import resolved

        plan = fold([await resolved(store, created)]).plan
        name, steps = (plan.name, len(plan.steps)) if plan is not None else ("?", 0)
    shape = str(created.data.get("shape") or "")
    if ended is not None and ended.type == ev.RUN_FINISHED:
        finished = ev.RunFinished.read(ended)
        usage = finished.usage or {}
        return RunSummary(
            run_id, name, str(finished.status), at, finished.steps or steps, shape, finished.succeeded,
            ended.timestamp, int(usage.get("input_tokens", 0) or 0) + int(usage.get("output_tokens", 0) or 0),
            float(usage.get("cost_usd", 0.0) or 0.0),
        )  # fmt: skip
    status = "running"
    last = await pulse(store, run_id)
    if last is not None and last.stalled():
        status = "stalled"  # unfinished, and its coordinator has stopped beating
    return RunSummary(run_id, name, status, at, steps, shape)


async def _folded(store: StreamStore, summary: RunSummary) -> RunSummary:
    """The summary with what folding the run says: its steps (grown ones included), how many
    succeeded, its usage, its shape."""
    from parallax.core.plan import plan_shape
    from parallax.engine.runs import load_run

    try:
        state = await load_run(store, summary.run_id)
    except (StreamError, BlobNotFound, ValueError):
        return summary
    return replace(
        summary,
        steps=len(state.steps),
        shape=summary.shape or (plan_shape(state.plan) if state.plan else ""),
        succeeded=sum(1 for s in state.steps.values() if s.status == "succeeded"),
        tokens=state.usage.total_tokens,
        cost_usd=round(state.usage.cost_usd, 6),
        finished_at=state.finished_at,
    )
