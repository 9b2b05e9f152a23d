"""A run's existence on the store: creating it (`run.created`, a conditional append at 0, so
an id is taken once) and folding it back. Below the runner: the runner, its sub-runs and the
API all use these."""

from __future__ import annotations

import secrets
import time

from parallax.core import events as ev
from parallax.core.errors import RunNotFound, SeqNumMismatch, StreamNotFound, UserError
from parallax.core.events import Event
from parallax.core.plan import Plan, plan_shape
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState, remember_plan
from parallax.engine.control import ControlLog, stored_form
from parallax.streams.base import AppendInput, AppendRecord, StreamStore
from parallax.streams.folded import event_record


def new_run_id(name: str = "run") -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())[:24].strip("-") or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def stored_record(event: Event) -> AppendRecord:
    try:
        return event_record(event)
    except TypeError as e:  # orjson: integers past 64 bits, non-string keys, ...
        raise UserError(f"{event.type} cannot be stored: {e}") from None


async def create_run(store: StreamStore, plan: Plan, *, run_id: str | None = None, source: str | None = None) -> str:
    run_id = run_id or new_run_id(plan.name)
    digest = plan.content_hash()
    remember_plan(plan, digest)
    event = Event(
        ev.RUN_CREATED,
        {
            "run_id": run_id,
            # Defaults are left out (validation puts them back), which keeps large plans small.
            "plan": plan.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            "plan_hash": digest,
            "source": source,
            "name": plan.name,  # what `parallax runs` shows, without reading the plan
            "steps": len(plan.steps),
            "shape": plan_shape(plan),  # which views the dashboard shows (core.plan.plan_shape)
        },
    )
    try:
        record = stored_record(await stored_form(store, event))  # a large plan goes to a blob
        await store.append(RunStreams(run_id).control, AppendInput([record], match_seq_num=0))
    except SeqNumMismatch:
        raise UserError(f"run {run_id!r} already exists") from None
    return run_id


async def load_run(store: StreamStore, run_id: str) -> RunState:
    """The run's state: its control stream folded (from a verified snapshot when there is one)."""
    try:
        state = await ControlLog(store, run_id).load()
    except StreamNotFound:
        raise RunNotFound(run_id) from None
    if state.plan is None:
        raise RunNotFound(run_id)
    return state
