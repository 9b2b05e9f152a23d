"""`follow_run`, the one way to watch a run: control events in log order with blob-held outputs
resolved, agents' events as their steps start, an end at `run.finished`; and `wait_finished`
from another handle on the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from parallax.core import events as ev
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.follow import follow_run, wait_finished
from parallax.engine.runner import Runner
from parallax.streams.sqlite import SqliteStore

BIG = 300 * 1024  # past the 256 KiB at which a step output goes to a blob


def plan(tmp_path: Path) -> Plan:
    script = tmp_path / "big.py"
    script.write_text(f"import json\nprint('chunk one')\nprint(json.dumps({{'text': 'x' * {BIG}}}))\n")
    return Plan(
        name="follow",
        steps=(
            Step(id="big", kind="agent", agent=AgentSpec(kind="command", command=f"python3 {script}")),
            Step(
                id="chat",
                kind="agent",
                after=("big",),
                agent=AgentSpec(kind="python", ref="tests.engine.agents:chatty"),
            ),
        ),
    )


async def test_follow_a_run_from_another_handle(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "f.db") as store, SqliteStore(tmp_path / "f.db") as watcher:
        run_id = await api.create_run(store, plan(tmp_path))
        seen = []

        async def watch() -> None:
            async for item in follow_run(watcher, run_id):
                seen.append(item)

        watching = asyncio.create_task(watch())
        state = await Runner(store, run_id).run()
        await asyncio.wait_for(watching, 120)  # it ends by itself at run.finished
        assert state.status == "succeeded"
        control = [i.event for i in seen if i.kind == "control"]
        assert control[-1].type == ev.RUN_FINISHED
        assert [e.seq_num for e in control] == sorted(e.seq_num for e in control)
        big = next(e for e in control if e.type == ev.STEP_OUTPUT and e.step == "big")
        assert big.data["output"] == {"text": "x" * BIG}  # resolved, not {"$blob": ...}
        raw = next(r for r in await store.read_all(f"runs/{run_id}/control") if r.seq_num == big.seq_num)
        assert b"$blob" in raw.body  # ... though the log holds a blob reference
        chunks = [i.event.data["text"] for i in seen if i.kind == "agent" and i.event.type == ev.AGENT_CHUNK
                  and i.stream.endswith("/chat")]  # fmt: skip
        assert "".join(chunks) == "".join(f"chunk {i} " for i in range(5))
        assert (await wait_finished(watcher, run_id)).status == "succeeded"  # already over: at once


async def test_wait_finished_waits_for_the_end(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "w.db") as store, SqliteStore(tmp_path / "w.db") as other:
        run_id = await api.create_run(store, plan(tmp_path))
        waiting = asyncio.create_task(wait_finished(other, run_id))
        state = await Runner(store, run_id).run()
        assert (await asyncio.wait_for(waiting, 120)).status == state.status == "succeeded"
