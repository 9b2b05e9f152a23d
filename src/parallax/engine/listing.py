"""Listing runs from what `run.created` and the last control record say: the plan is never
read (it may be megabytes, or a blob), so listing costs the same whatever the runs' sizes, and
this module imports no more than the stores and the event codec (`parallax runs` starts fast)."""

from __future__ import annotations

from dataclasses import dataclass

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
    steps: int


async def list_runs(store: StreamStore, limit: int = 1000) -> list[RunSummary]:
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
                out.append(await _summary(store, run_id, info.created_at, created, ended))
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
    finished = ev.RunFinished.read(ended).status if ended is not None and ended.type == ev.RUN_FINISHED else None
    status = str(finished or "running")
    if finished is None:
        last = await pulse(store, run_id)
        if last is not None and last.stalled():
            status = "stalled"  # unfinished, and its coordinator has stopped beating
    return RunSummary(run_id, name, status, at, steps)
