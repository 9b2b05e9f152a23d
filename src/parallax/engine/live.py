"""Taking part in a live cohorts run from any process: topology requests, messages, joining.

- `request_topology` appends a typed action (`core/actions.py`) to the run's control stream as
  `topology.requested`; the coordinator applies it at the run's next decision (after the
  current round) and records the outcome (`applied`), so it is durable and visible everywhere.
  A run that is not live applies it when resumed.
- `send_message` appends to `runs/<run>/inbox/<target>`: a cohort's members, one agent, or the
  moderator see it in their next prompt.
- `post_to_cohort` is a person's or an external agent's line on a cohort's stream: that
  cohort's members read it; no other cohort can.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import ValidationError

from parallax.core import events as ev
from parallax.core.actions import ACTION_MODELS
from parallax.core.errors import UserError
from parallax.core.events import Event
from parallax.core.expand import cohort_stream
from parallax.core.state import RunState
from parallax.engine.api import load_run
from parallax.engine.cohorts import inbox_stream
from parallax.engine.control import control_stream
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record


def cohorts_of(state: RunState) -> dict[str, list[str]]:
    """Cohort name -> member agents, as the run stands (the moderator's last snapshot, or the
    pattern's cohorts before the first decision). Empty for runs without cohorts."""
    session = state.sessions.get("moderator")
    if session is not None:
        return {c: list(m) for c, m in session["members"].items()}
    if state.plan is None:
        return {}
    for step in state.plan.steps:
        if step.control is not None and step.control.kind == "moderate":
            cohorts = step.control.settings.get("cohorts")
            if isinstance(cohorts, dict):
                return {
                    str(c): [str(m) for m in members] for c, members in cohorts.items() if isinstance(members, list)
                }
    return {}


async def _live_cohorts_run(store: StreamStore, run_id: str) -> tuple[RunState, dict[str, list[str]]]:
    state = await load_run(store, run_id)
    cohorts = cohorts_of(state)
    if not cohorts:
        raise UserError(f"run {run_id} has no cohorts: topology and joining apply to `pattern: cohorts` runs")
    if state.finished:
        raise UserError(f"run {run_id} already finished ({state.status})")
    if (state.sessions.get("moderator") or {}).get("concluded"):
        raise UserError(f"run {run_id} has concluded; it is writing its synthesis")
    return state, cohorts


async def request_topology(store: StreamStore, run_id: str, action: dict[str, Any], by: str) -> int:
    """Validate `action` and append it; returns the request's seq number on the control stream."""
    _, cohorts = await _live_cohorts_run(store, run_id)
    model = ACTION_MODELS.get(str(action.get("action")))
    if model is None:
        raise UserError(f"unknown action {action.get('action')!r}; actions: {', '.join(ACTION_MODELS)}")
    try:
        model.model_validate(action)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "action"
        raise UserError(f"{action['action']}: {where}: {first['msg']}") from None
    for key in ("stream", "cohort"):
        if key in action and action[key] not in cohorts:
            raise UserError(f"run {run_id} has no cohort {action[key]!r} (cohorts: {', '.join(cohorts)})")
    event = Event(ev.TOPOLOGY_REQUESTED, {"action": action, "by": by})
    ack = await store.append(control_stream(run_id), AppendInput([event_record(event)]))
    return ack.start.seq_num


async def wait_applied(store: StreamStore, run_id: str, seq: int, timeout_s: float) -> str | None:
    """The outcome the coordinator recorded for request `seq`, or None if the wait ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await load_run(store, run_id)
        if seq in state.applied:
            return state.applied[seq]
        left = deadline - time.monotonic()
        if left <= 0 or state.finished:
            return None
        tail = (await store.check_tail(control_stream(run_id))).seq_num
        try:
            async with asyncio.timeout(min(left, 1.0)):
                await store.wait_for_tail(control_stream(run_id), tail)
        except TimeoutError:
            continue


def _task_ids(state: RunState) -> list[str]:
    """The tasks of a run's task graph (none for other runs)."""
    plan = state.plan
    step = next((s for s in plan.steps if s.tasks is not None), None) if plan is not None else None
    if step is None or step.tasks is None:
        return []
    listed = step.tasks.get("tasks")
    return [str(t["id"]) for t in listed if isinstance(t, dict) and "id" in t] if isinstance(listed, list) else []


async def send_message(store: StreamStore, run_id: str, target: str, text: str, by: str) -> int:
    """A message on `target`'s inbox stream: a cohort, an agent or the moderator of a cohorts
    run, or a task of a task graph (its agent sees it in `.shared/inbox.md`)."""
    state = await load_run(store, run_id)
    tasks = _task_ids(state)
    if tasks:
        if state.finished:
            raise UserError(f"run {run_id} already finished ({state.status})")
        if target not in tasks:
            raise UserError(f"run {run_id} has no task {target!r} (tasks: {', '.join(tasks)})")
    else:
        _, cohorts = await _live_cohorts_run(store, run_id)
        agents = {a for members in cohorts.values() for a in members}
        if target != "moderator" and target not in cohorts and target not in agents:
            known = ", ".join(["moderator", *cohorts, *sorted(agents)])
            raise UserError(f"run {run_id} has no cohort or agent {target!r} (known: {known})")
    if not text.strip():
        raise UserError("the message is empty")
    event = Event(ev.INBOX_MESSAGE, {"from": by, "text": text})
    ack = await store.append(inbox_stream(run_id, target), AppendInput([event_record(event)]))
    return ack.start.seq_num


async def check_cohort(store: StreamStore, run_id: str, cohort: str) -> None:
    _, cohorts = await _live_cohorts_run(store, run_id)
    if cohort not in cohorts:
        raise UserError(f"run {run_id} has no cohort {cohort!r} (cohorts: {', '.join(cohorts)})")


async def post_to_cohort(store: StreamStore, run_id: str, cohort: str, text: str, by: str) -> int:
    event = Event(ev.COHORT_MESSAGE, {"from": by, "text": text})
    ack = await store.append(cohort_stream(run_id, cohort), AppendInput([event_record(event)]))
    return ack.start.seq_num
