"""A coordinator that loses a race re-decides: a step's output that another coordinator already
recorded is not recorded a second time.

Found by a loaded run of the NATS-restart test: two steps had two `step.output` records on the
control stream (the fold keeps the first, but the log said the step ended twice). A coordinator
whose fold was stale (the other one's output landed between its read and its append) re-queued
its batch at the new tail unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parallax.core import events as ev
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import ControlLog, control_stream, read_events
from parallax.streams.base import AppendRecord
from parallax.streams.folded import event_record
from parallax.streams.sqlite import SqliteStore


def plan() -> Plan:
    agent = AgentSpec(kind="python", ref="x:y")
    return Plan(name="race", steps=(Step(id="a", kind="agent", agent=agent), Step(id="b", kind="agent", agent=agent)))


async def test_an_output_recorded_meanwhile_is_not_recorded_again(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "r.db") as store:
        run_id = await api.create_run(store, plan(), run_id="r")
        late, first = ControlLog(store, run_id), ControlLog(store, run_id)
        await late.load()
        await first.load()
        await first.emit(ev.StepOutput({"by": "first"}, attempt=1).event("a", "a"))  # late's fold is now stale
        await late.emit(
            ev.StepOutput({"by": "late"}, attempt=1).event("a", "a"),  # a repeat: settled, not appended
            ev.StepOutput({"by": "late"}, attempt=1).event("b", "b"),  # news: appended at the new tail
        )
        outputs = [e for e in await read_events(store, control_stream(run_id)) if e.type == ev.STEP_OUTPUT]
        assert [(e.step, e.data["output"]["by"]) for e in outputs] == [("a", "first"), ("b", "late")]
        assert late.state.steps["a"].output == {"by": "first"} and late.state.steps["b"].output == {"by": "late"}
        await late.close()
        await first.close()


async def test_each_event_is_encoded_once_on_its_way_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batching measures each record; the append then reuses it rather than encoding again.
    import parallax.engine.control as control

    encoded: list[str] = []

    def counting(event: ev.Event) -> AppendRecord:
        encoded.append(event.type)
        return event_record(event)

    monkeypatch.setattr(control, "event_record", counting)
    async with SqliteStore(tmp_path / "p.db") as store:
        run_id = await api.create_run(store, plan())
        log = ControlLog(store, run_id)
        await log.load()
        events = [ev.StepStarted(1, "python").event(step) for step in ("a", "b")]
        await asyncio.gather(*(log.emit(event) for event in events))
        await log.close()
    assert encoded == [ev.STEP_STARTED, ev.STEP_STARTED]
