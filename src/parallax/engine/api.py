"""Starting, resuming, forking and steering runs: the operations the CLI and server share.

A run *is* its streams: creating one appends `run.created` (the whole plan, its hash, where it
came from) to `runs/<run>/control` with `match_seq_num=0`, so two processes cannot create the
same run. Everything else is read back from that stream.
"""

from __future__ import annotations

import secrets

from parallax.core import events as ev
from parallax.core.errors import RunNotFound, StreamNotFound, UserError
from parallax.core.events import Event
from parallax.core.plan import Plan
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState, fold
from parallax.engine.control import ControlLog, control_stream, read_events, stored_form
from parallax.engine.listing import RunSummary, list_runs
from parallax.engine.runner import Runner, RunOptions
from parallax.engine.runs import create_run, load_run, new_run_id, stored_record
from parallax.streams.base import AppendInput, StreamStore

__all__ = [
    "RunSummary",
    "create_run",
    "decide_gate",
    "fork_run",
    "list_runs",
    "load_run",
    "new_run_id",
    "request_cancel",
    "resume_run",
    "run_plan",
]


async def run_plan(
    store: StreamStore,
    plan: Plan,
    *,
    run_id: str | None = None,
    source: str | None = None,
    options: RunOptions | None = None,
) -> RunState:
    """Create a run and execute it to the end."""
    run_id = await create_run(store, plan, run_id=run_id, source=source)
    return await Runner(store, run_id, options).run()


async def resume_run(store: StreamStore, run_id: str, options: RunOptions | None = None) -> RunState:
    """Fold the log and continue: finished steps are never run again."""
    try:
        await store.check_tail(control_stream(run_id))
    except StreamNotFound:
        raise RunNotFound(run_id) from None
    return await Runner(store, run_id, options).run()


async def fork_run(
    store: StreamStore,
    run_id: str,
    at_seq: int,
    *,
    new_run_id: str | None = None,
    plan: Plan | None = None,
) -> str:
    """A new run whose control stream is the old one's prefix below `at_seq`, with the agent
    streams cut where the old run stood at that point. `plan` replaces the plan from there on
    (a different model or prompt for the steps not yet done)."""
    await load_run(store, run_id)
    if at_seq < 1:
        raise UserError("a fork needs at least the run.created record: --at must be >= 1")
    tail = (await store.check_tail(control_stream(run_id))).seq_num
    if at_seq > tail:
        raise UserError(f"run {run_id} has only {tail} control records; cannot fork at {at_seq}")
    prefix = fold([e for e in await read_events(store, control_stream(run_id)) if e.seq_num < at_seq])
    forked = new_run_id or f"{run_id.rsplit('-', 1)[0]}-fork-{secrets.token_hex(3)}"
    await store.fork(control_stream(run_id), control_stream(forked), at_seq)
    cut_ms = max((s.finished_at or s.started_at or 0) for s in prefix.steps.values()) if prefix.steps else 0
    for info in await store.list(RunStreams(run_id).agents):
        agent = info.name.rsplit("/", 1)[-1]
        if agent not in prefix.steps or prefix.steps[agent].status == "pending":
            continue
        records = await store.read_all(info.name)
        keep = sum(1 for r in records if r.timestamp <= cut_ms)
        await store.fork(info.name, RunStreams(forked).agent(agent), keep)
    data: dict[str, object] = {"run_id": forked, "from_run": run_id, "at_seq": at_seq}
    if plan is not None:
        data["plan"] = plan.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data["plan_hash"] = plan.content_hash()
    record = stored_record(await stored_form(store, Event(ev.RUN_FORKED, data)))
    await store.append(control_stream(forked), AppendInput([record]))
    return forked


async def request_cancel(store: StreamStore, run_id: str, reason: str = "") -> None:
    state = await load_run(store, run_id)
    if state.finished:
        raise UserError(f"run {run_id} already finished ({state.status})")
    event = ev.RunCancelRequested(reason).event()
    await store.append(control_stream(run_id), AppendInput([stored_record(event)]))


async def decide_gate(store: StreamStore, run_id: str, step: str, *, approved: bool, by: str, note: str = "") -> None:
    """Approve or reject a waiting approval gate: decided on the folded log, appended at its
    tail (decided again if anything was appended meanwhile)."""
    log = ControlLog(store, run_id)
    await log.load()

    def decide() -> list[Event]:
        state = log.state
        if state.plan is None:
            raise RunNotFound(run_id)
        try:
            spec = state.plan.step(step)
        except KeyError:
            raise UserError(f"run {run_id} has no step {step!r}") from None
        if spec.kind != "gate" or spec.gate is None or spec.gate.kind != "approval":
            raise UserError(f"step {step!r} of run {run_id} is not an approval gate")
        if step in state.gate_decisions:
            decided = state.gate_decisions[step]
            verdict = "approved" if decided.approved else "rejected"
            raise UserError(f"gate {step!r} was already {verdict} by {decided.by}")
        return [ev.GateDecided(approved, by, note).event(step)]

    await log.decide_and_append(decide)
