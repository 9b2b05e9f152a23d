"""Resume continues from the log; fork starts a new run from a prefix of an old one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parallax.core import events as ev
from parallax.core.errors import RunNotFound, UserError
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import agent_stream, control_stream, read_events
from parallax.engine.runner import Runner
from parallax.streams.sqlite import SqliteStore
from tests.waiting import async_wait_until


def step(step_id: str, fn: str, *after: str) -> Step:
    return Step(id=step_id, kind="agent", after=after, agent=AgentSpec(kind="python", ref=f"tests.engine.agents:{fn}"))


def chain(folder: Path, last: str = "side_effect") -> Plan:
    return Plan(
        name="chain",
        steps=(step("one", "chatty"), step("two", "side_effect", "one"), step("three", last, "two")),
        inputs={"dir": str(folder), "sleep": 0.05},
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "fork.db") as store:
        yield store


async def test_resume_after_the_runner_dies_mid_run(store: SqliteStore, tmp_path: Path) -> None:
    run_id = await api.create_run(store, chain(tmp_path))
    task = asyncio.create_task(Runner(store, run_id).run())

    async def two_done() -> bool:
        return (await api.load_run(store, run_id)).steps["two"].status == "succeeded"

    await async_wait_until(two_done, timeout=60, interval=0.005, what="step two to succeed")
    task.cancel()  # the coordinator goes away with "three" unfinished
    await asyncio.gather(task, return_exceptions=True)
    state = await api.resume_run(store, run_id)
    assert state.status == "succeeded"
    lines = (tmp_path / "executions").read_text().split()
    assert lines[::2].count("two") == 1, "a step with recorded output never runs again"
    types = [e.type for e in await read_events(store, control_stream(run_id))]
    assert types.count(ev.RUN_RESUMED) == 2


async def test_resuming_a_finished_run_changes_nothing(store: SqliteStore, tmp_path: Path) -> None:
    state = await api.run_plan(store, chain(tmp_path))
    tail = (await store.check_tail(control_stream(state.run_id))).seq_num
    again = await api.resume_run(store, state.run_id)
    assert again.status == "succeeded"
    assert (await store.check_tail(control_stream(state.run_id))).seq_num == tail


async def test_a_second_coordinator_fences_out_the_first(store: SqliteStore, tmp_path: Path) -> None:
    release = tmp_path / "release"
    plan = Plan(
        name="slow",
        steps=(step("slow", "held"), step("after", "chatty", "slow")),
        inputs={"dir": str(tmp_path), "release": str(release)},
    )
    run_id = await api.create_run(store, plan)
    first = asyncio.create_task(Runner(store, run_id).run())

    def slow_started(times: int) -> bool:
        count = tmp_path / "slow.count"
        return count.exists() and int(count.read_text()) >= times

    await async_wait_until(lambda: slow_started(1), timeout=60, interval=0.005, what="the slow step to start")
    second = asyncio.create_task(Runner(store, run_id).run())  # takes over: fences the control stream
    # the second coordinator runs the step again (after fencing), while the first still runs it
    await async_wait_until(lambda: slow_started(2), timeout=60, interval=0.005, what="the second to start it")
    release.touch()
    assert (await asyncio.wait_for(second, 60)).status == "succeeded"
    with pytest.raises(Exception, match="another coordinator took over"):
        await asyncio.wait_for(first, 60)


async def test_fork_from_a_prefix_with_a_new_plan(store: SqliteStore, tmp_path: Path) -> None:
    original = await api.run_plan(store, chain(tmp_path))
    events = await read_events(store, control_stream(original.run_id))
    two_done = next(e.seq_num for e in events if e.type == ev.STEP_OUTPUT and e.step == "two")
    # Fork just after "two" finished, with a different agent for "three".
    forked = await api.fork_run(store, original.run_id, two_done + 1, plan=chain(tmp_path, last="chatty"))
    state = await api.resume_run(store, forked)
    assert state.status == "succeeded"
    assert state.forked_from == (original.run_id, two_done + 1)
    assert state.steps["three"].output == {"said": 5}, "the new plan's agent ran"
    assert state.steps["two"].output == original.steps["two"].output, "the prefix's outputs are kept"
    executions = (tmp_path / "executions").read_text().split()[::2]
    assert executions.count("two") == 1, "the fork did not rerun what its prefix already had"
    # The agent streams were forked too: "one" streamed its chunks in the original run.
    chunks = await store.read_all(agent_stream(forked, "one"))
    assert len(chunks) == len(await store.read_all(agent_stream(original.run_id, "one")))


async def test_fork_and_load_errors(store: SqliteStore, tmp_path: Path) -> None:
    with pytest.raises(RunNotFound):
        await api.fork_run(store, "nope", 3)
    state = await api.run_plan(store, chain(tmp_path))
    with pytest.raises(UserError, match="cannot fork at 999"):
        await api.fork_run(store, state.run_id, 999)
    with pytest.raises(UserError, match="already exists"):
        await api.create_run(store, chain(tmp_path), run_id=state.run_id)
