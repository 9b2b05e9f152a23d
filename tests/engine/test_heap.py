"""engine/heap.py: a large run's heap is kept out of the collector's full walks while it runs,
and given back when the last large run ends."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from parallax.core.plan import AgentSpec, Plan, Step
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.engine import api
from parallax.engine.control import ControlLog
from parallax.engine.heap import LARGE_PLAN, frozen_heap
from parallax.engine.listing import planned_steps
from parallax.engine.runner import Runner
from parallax.streams.sqlite import SqliteStore


def test_a_large_run_freezes_what_lives_and_gives_it_back() -> None:
    gc.unfreeze()
    with frozen_heap(LARGE_PLAN - 1):
        assert gc.get_freeze_count() == 0  # a small run leaves the collector alone
    with frozen_heap(LARGE_PLAN):
        at_start = gc.get_freeze_count()
        assert at_start > 0
        kept = [[i] for i in range(10_000)]  # long-lived objects made during the run
        gc.collect()  # a full collection: its survivors are frozen too
        assert gc.get_freeze_count() >= at_start + len(kept)
        with frozen_heap(LARGE_PLAN):  # a sub-run shares the freeze
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    assert all(callback.__module__ != "parallax.engine.heap" for callback in gc.callbacks)
    garbage: list[object] = []
    garbage.append(garbage)  # a cycle made after the run is collected as usual
    del garbage
    assert gc.collect() >= 1


async def test_a_large_run_is_frozen_before_its_log_is_folded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Folding a large run's log builds most of its heap: a full collection in the middle of it
    # would walk it all, so the runner freezes first when run.created says the plan is large.
    plan = Plan(
        name="wide",
        steps=tuple(
            Step(id=f"a{i}", kind="agent", agent=AgentSpec(kind="python", ref="tests.engine.test_heap:answer"))
            for i in range(LARGE_PLAN)
        ),
        concurrency=LARGE_PLAN,
    )
    frozen_while_folding: list[int] = []
    load = ControlLog.load

    async def watched_load(self: ControlLog) -> RunState:
        frozen_while_folding.append(gc.get_freeze_count())
        return await load(self)

    monkeypatch.setattr(ControlLog, "load", watched_load)
    gc.unfreeze()
    async with SqliteStore(tmp_path / "p.db") as store:
        run_id = await api.create_run(store, plan)
        assert await planned_steps(store, RunStreams(run_id).control) == LARGE_PLAN
        assert await planned_steps(store, "runs/none/control") == 0
        state = await Runner(store, run_id).run()
    assert state.status == "succeeded"
    assert frozen_while_folding and frozen_while_folding[0] > 0
    assert gc.get_freeze_count() == 0  # given back at the end


def answer(ctx: object) -> dict[str, int]:
    return {"ok": 1}
