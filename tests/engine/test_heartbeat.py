"""A run whose coordinator is gone says so (engine/heartbeat.py): `parallax runs` and
`parallax inspect` show it *stalled*, with how to continue it, instead of running forever."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from parallax.agents.base import AgentContext
from parallax.core.errors import StreamNotFound
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.core.runstreams import RunStreams
from parallax.engine import api
from parallax.engine.heartbeat import TRIM_EVERY, Pulse, beat, pulse
from parallax.engine.listing import list_runs
from parallax.streams.base import ReadLimit
from parallax.streams.sqlite import SqliteStore
from tests.processes import read_line, reap
from tests.waiting import async_wait_until

ROOT = Path(__file__).resolve().parents[2]

COORDINATOR = """
import asyncio, sys
from parallax.core import events as ev
from parallax.engine.runner import Runner, RunOptions
from parallax.streams.sqlite import SqliteStore

def seen(event):
    if event.type == ev.STEP_STARTED:
        print("started", flush=True)

async def main():
    async with SqliteStore(sys.argv[1]) as store:
        await Runner(store, sys.argv[2], RunOptions(on_event=seen, heartbeat_s=0.2)).run()

asyncio.run(main())
"""


async def forever(ctx: AgentContext) -> dict[str, Any]:
    await asyncio.Event().wait()  # an agent that is still thinking when its coordinator dies
    return {}


async def test_a_run_whose_coordinator_was_killed_is_shown_stalled(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    agent = AgentSpec(kind="python", ref="tests.engine.test_heartbeat:forever")
    async with SqliteStore(db) as store:
        run_id = await api.create_run(store, Plan(name="ghost", steps=(Step(id="a", kind="agent", agent=agent),)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, str(db), run_id], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert read_line(child.stdout).strip() == "started"  # type: ignore[arg-type]
        async with SqliteStore(db) as store:
            await async_wait_until(lambda: pulse(store, run_id), what="a first heartbeat", timeout=60)
            assert [r.status for r in await list_runs(store)] == ["running"]  # beating
            child.kill()
            child.wait(timeout=60)

            async def stalled() -> bool:
                return [r.status for r in await list_runs(store)] == ["stalled"]

            await async_wait_until(stalled, what="the run shown stalled", timeout=60)
    finally:
        reap(child)
    cli = [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}"]
    listed = subprocess.run([*cli, "runs"], capture_output=True, text=True, timeout=120, env=env)
    assert f"{run_id}\tstalled\tghost" in listed.stdout
    assert f"continue with `parallax resume {run_id}`" in listed.stderr
    inspected = subprocess.run([*cli, "inspect", run_id], capture_output=True, text=True, timeout=120, env=env)
    assert "stalled: no word from its coordinator" in inspected.stdout
    as_json = subprocess.run([*cli, "inspect", run_id, "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert json.loads(as_json.stdout)["stalled"] is True


async def test_the_heartbeat_stream_stays_short(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "p.db") as store:
        beating = asyncio.create_task(beat(store, "r", "me", every_s=0.001))
        stream = RunStreams("r").heartbeat

        async def beaten() -> bool:
            try:
                return (await store.check_tail(stream)).seq_num > 2 * TRIM_EVERY + 5
            except StreamNotFound:  # not yet beaten once
                return False

        try:
            await async_wait_until(beaten, what="two trims of the heartbeat", timeout=120)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        kept = await store.read(stream, limit=ReadLimit(count=1000))
        assert len(kept.records) <= TRIM_EVERY + 2
        last = await pulse(store, "r")
        assert last is not None and last.coordinator == "me"
    # Stalled after six periods without a beat, judged on the store's timestamps.
    assert not Pulse("c", 1_000, 5.0).stalled(now_ms=1_000 + 29_000)
    assert Pulse("c", 1_000, 5.0).stalled(now_ms=1_000 + 31_000)
