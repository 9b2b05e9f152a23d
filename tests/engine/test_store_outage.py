"""A store that does not answer is not a step's failure: the coordinator stops with the error,
records nothing against the step, and the run resumes where it was (a worker takes it up again).

Found under load: a coordinator on NATS whose work board read timed out while the server was
restarting recorded every step as failed ("internal error"), and the run ended failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parallax.agents.base import AgentResult, BudgetView
from parallax.core.errors import StoreUnavailable
from parallax.core.plan import AgentSpec, MergeSpec, Plan, Step
from parallax.core.state import RunState
from parallax.engine import api
from parallax.engine.options import RunOptions
from parallax.engine.runner import Runner
from parallax.streams.sqlite import SqliteStore


class FlakyBoard:
    """An executor standing in for the work board: the first `outages` calls find the store
    away (the boundary double); later ones answer."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.calls = 0

    async def run(
        self, state: RunState, step: Step, attempt: int, prompt: str | None, agent_input: dict[str, Any],
        budget: BudgetView,
    ) -> AgentResult:  # fmt: skip
        self.calls += 1
        if self.calls <= self.outages:
            raise StoreUnavailable("NATS did not answer a read of 'runs/r/work' in time")
        return AgentResult({"step": step.id, "value": 1})


def plan() -> Plan:
    agents = tuple(Step(id=f"a{i}", kind="agent", agent=AgentSpec(kind="python", ref="x:y")) for i in range(4))
    merge = Step(id="merge", kind="merge", after=tuple(s.id for s in agents), merge=MergeSpec(ignore=("step",)))
    return Plan(name="outage", steps=(*agents, merge))


async def test_a_store_outage_stops_the_coordinator_without_failing_a_step(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "o.db") as store:
        run_id = await api.create_run(store, plan(), run_id="r")
        with pytest.raises(StoreUnavailable):
            await Runner(store, run_id, RunOptions(executor=FlakyBoard(outages=4), coordinator="c1")).run()
        state = await api.load_run(store, run_id)
        assert not state.finished
        assert all(step.status != "failed" and step.error is None for step in state.steps.values())
        resumed = await Runner(store, run_id, RunOptions(executor=FlakyBoard(outages=0), coordinator="c2")).run()
        assert resumed.status == "succeeded"
        assert all(resumed.steps[f"a{i}"].output == {"step": f"a{i}", "value": 1} for i in range(4))
        assert [resumed.steps[f"a{i}"].attempts for i in range(4)] == [2, 2, 2, 2]  # started again, not failed
