"""Hooks at the unit level: which events trigger which hook, task events folded from other
processes reach them, and a hook that hangs is cut off and recorded."""

from __future__ import annotations

import json
from pathlib import Path

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.tasks import TASK_SUCCEEDED
from parallax.engine.control import ControlLog, control_stream, read_events
from parallax.engine.hooks import HOOK_FAILED, HOOK_RAN, Hooks, hooks_stream
from parallax.settings import HooksConfig
from parallax.streams import AppendInput, AppendRecord
from parallax.streams.memory import MemoryStore


def _record(event: Event) -> AppendRecord:
    headers, body = event.encode()
    return AppendRecord(body=body, headers=headers)


async def test_task_events_folded_from_elsewhere_reach_on_task_complete(tmp_path: Path) -> None:
    store = MemoryStore()
    out = tmp_path / "tasks.jsonl"
    hooks = Hooks(store, "r", HooksConfig(on_task_complete=["sh", "-c", f"cat >> {out}; echo >> {out}"]))
    old = Event(TASK_SUCCEEDED, {"task": "before-load", "worker": "w"})
    await store.append(control_stream("r"), AppendInput([_record(old)]))
    log = ControlLog(store, "r", on_folded=hooks)
    await log.load()  # what was there before is history, not news: no hook for it
    new = Event(TASK_SUCCEEDED, {"task": "t1", "worker": "w2"})  # a worker process appends
    await store.append(control_stream("r"), AppendInput([_record(new)]))
    await log.sync()
    await hooks.drain()
    lines = [json.loads(line) for line in out.read_text().splitlines() if line]
    assert [line["event"]["data"]["task"] for line in lines] == ["t1"]
    assert lines[0]["hook"] == "on_task_complete"
    recorded = await read_events(store, hooks_stream("r"))
    assert [e.type for e in recorded] == [HOOK_RAN]


async def test_a_hanging_hook_is_cut_off_and_recorded(tmp_path: Path) -> None:
    store = MemoryStore()
    hooks = Hooks(store, "r", HooksConfig(on_finish="sleep 30", timeout_s=0.3))
    hooks(Event(ev.RUN_FINISHED, {"status": "succeeded"}, seq_num=9))
    await hooks.drain()
    [event] = await read_events(store, hooks_stream("r"))
    assert event.type == HOOK_FAILED
    assert event.data["error"] == "timed out after 0.3s"
    assert event.data["event_seq"] == 9


def test_which_events_trigger_which_hooks() -> None:
    config = HooksConfig(on_step_complete="a", on_merge="b", on_conflict="c", on_finish="d", on_task_complete="e")
    hooks = Hooks(MemoryStore(), "r", config, step_kind=lambda step: "merge" if step == "m" else "agent")
    assert hooks.names_for(Event(ev.STEP_OUTPUT, {}, step="x")) == ["on_step_complete"]
    assert hooks.names_for(Event(ev.STEP_OUTPUT, {}, step="m")) == ["on_step_complete", "on_merge"]
    assert hooks.names_for(Event(ev.STEP_FAILED, {"final": False}, step="x")) == []  # a retry follows
    assert hooks.names_for(Event(ev.STEP_FAILED, {"final": True}, step="x")) == ["on_step_complete"]
    assert hooks.names_for(Event(ev.STEP_SKIPPED, {}, step="x")) == ["on_step_complete"]
    assert hooks.names_for(Event(ev.CONFLICT_FOUND, {})) == ["on_conflict"]
    assert hooks.names_for(Event(ev.RUN_FINISHED, {})) == ["on_finish"]
    assert hooks.names_for(Event(ev.STEP_STARTED, {}, step="x")) == []
    assert Hooks(MemoryStore(), "r", HooksConfig()).names_for(Event(ev.RUN_FINISHED, {})) == []  # none configured
