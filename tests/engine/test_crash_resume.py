"""SIGKILL a running run at random moments and resume it, again and again.

Invariants checked at every kill point:
- every event the killed process saw acknowledged is in the log, unchanged (nothing lost);
- the log only grows: what was there before a kill is a prefix of what is there after;
- a step whose output was in the log at a kill never executes again (executions are counted
  by a side-effect file the agents append to);
and at the end, the run's result equals that of a run that was never interrupted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parallax.core.plan import AgentSpec, MergeSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import control_stream
from parallax.streams.sqlite import SqliteStore
from tests.processes import read_line, reap

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("PARALLAX_CRASH_SEED", "20261123"))


def crash_plan(folder: Path) -> Plan:
    def side(step_id: str, *after: str) -> Step:
        return Step(
            id=step_id, kind="agent", after=after, agent=AgentSpec(kind="python", ref="tests.engine.agents:side_effect")
        )

    fan = [side(f"view{i}") for i in range(8)]
    return Plan(
        name="crash",
        steps=(
            *fan,
            Step(id="merge", kind="merge", after=tuple(s.id for s in fan), merge=MergeSpec(ignore=("step", "value"))),
            side("publish", "merge"),
            side("notify", "publish"),
        ),
        inputs={"dir": str(folder), "sleep": 0.1},
        concurrency=2,
    )


def executions(folder: Path) -> list[str]:
    """One line per execution of an agent: `step pid`."""
    path = folder / "executions"
    return path.read_text().split("\n")[:-1] if path.exists() else []


async def log_records(db: Path, run_id: str) -> list[tuple[int, bytes, tuple[Any, ...]]]:
    async with SqliteStore(db) as store:
        return [(r.seq_num, r.body, r.headers) for r in await store.read_all(control_stream(run_id))]


async def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    async with SqliteStore(tmp_path / "reference.db") as store:
        reference = await api.run_plan(store, crash_plan(reference_dir))
    assert reference.status == "succeeded"

    kill_points = 0
    round_number = 0
    while kill_points < 24 and round_number < 12:
        round_number += 1
        folder = tmp_path / f"round{round_number}"
        folder.mkdir()
        db = tmp_path / f"round{round_number}.db"
        async with SqliteStore(db) as store:
            run_id = await api.create_run(store, crash_plan(folder))
        finished = False
        attempts = 0
        while not finished:
            attempts += 1
            before = await log_records(db, run_id)
            lines_before = len(executions(folder))
            done_at_start = await done_steps_in(db, run_id, len(before))
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.engine.crash_worker", str(db), run_id],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                first = read_line(proc.stdout)  # its first acknowledged event: the run is under way
                if attempts <= 5:  # then let it finish
                    time.sleep(rng.uniform(0.0, 0.45))  # the scenario: a random moment of the run
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=120)
                rest = proc.stdout.read()  # the rest of what it printed (through the same buffer as the first)
            finally:
                reap(proc)
            out = first + rest
            finished = "FINISHED" in out
            if proc.returncode == -signal.SIGKILL:
                kill_points += 1

            after = await log_records(db, run_id)
            assert after[: len(before)] == before, "the log lost or changed records across a crash"
            by_seq = {seq: headers for seq, _, headers in after}
            for line in out.splitlines():
                if line.startswith("FINISHED"):
                    continue
                seq, kind, _step = line.split(" ")
                assert int(seq) in by_seq, f"acknowledged event {line!r} is missing after the kill"
                assert (b"type", kind.encode()) in by_seq[int(seq)]
            ran_again = {line.split()[0] for line in executions(folder)[lines_before:]} & done_at_start
            assert not ran_again, f"{ran_again} ran again after their output was recorded"

        async with SqliteStore(db) as store:
            state = await api.load_run(store, run_id)
        assert state.status == "succeeded"
        assert state.result == reference.result, "a crashed-and-resumed run ends with the same result"
        ran = {line.split()[0] for line in executions(folder)}
        assert ran == {s.id for s in crash_plan(folder).steps if s.kind == "agent"}
    assert kill_points >= 20, f"only {kill_points} kills hit a running process (seed {SEED})"


async def done_steps_in(db: Path, run_id: str, prefix: int) -> set[str]:
    """Steps whose output is within the first `prefix` records of the control stream."""
    from parallax.core.state import fold
    from parallax.engine.control import read_events

    async with SqliteStore(db) as store:
        events = [e for e in await read_events(store, control_stream(run_id)) if e.seq_num < prefix]
    return {step_id for step_id, st in fold(events).steps.items() if st.status == "succeeded"}
