"""Resume at scale: fold snapshots against reading the whole log.

    python bench/resume.py [--quick] [--events N] [--reps N]

Builds, on SQLite, a run whose control stream holds 100,000 events (400 steps that each failed
and were retried many times, then succeeded, written by a real coordinator through the
control log, snapshots and all) with one step left to run. Then, alternately:

- resume: `resume_run` on a fresh store handle, timed from the call to the moment the first new
  step's `step.started` is durable (the on_event hook);
- raw read: a plain `sqlite3` SELECT of every record of that control stream (no decoding);
- for reference, resume with the snapshots ignored (a full fold), and the CLI (`parallax resume`
  in a new process, from spawn to that step.started, interpreter start-up included).

The last line is

    RESULT resume_s=A raw_read_s=B ratio=A/B

with medians over the repetitions. Goal: ratio <= 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import ControlLog, control_stream, read_events
from parallax.engine.runner import RunOptions
from parallax.engine.snapshots import snapshot_stream
from parallax.streams.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
STEPS = 400


def plan() -> Plan:
    agent = AgentSpec(kind="python", ref="bench.resume_agents:quick")
    steps = [Step(id=f"s{i:03d}", kind="agent", agent=agent) for i in range(STEPS)]
    final = Step(id="report", kind="agent", agent=agent, after=tuple(s.id for s in steps))
    return Plan(name="long", steps=(*steps, final), concurrency=STEPS)


async def build(db: Path, events: int) -> str:
    """A run with `events` control events whose only unfinished step is `report`."""
    async with SqliteStore(db) as store:
        run_id = await api.create_run(store, plan(), run_id="long")
        log = ControlLog(store, run_id, snapshots=True)
        await log.load()
        await log.take_over("builder")
        failures = max(0, -(-(events // STEPS - 2) // 3))  # per step: 3 per failure + start + output
        batch: list[Event] = []
        for i in range(STEPS):
            step = f"s{i:03d}"
            for attempt in range(1, failures + 1):
                batch.append(Event(ev.STEP_STARTED, {"attempt": attempt, "kind": "python"}, step=step, agent=step))
                batch.append(Event(ev.STEP_FAILED, {"attempt": attempt, "error": "transient", "final": False,
                                                    "usage": {"requests": 1}}, step=step, agent=step))  # fmt: skip
                batch.append(Event(ev.STEP_RETRY, {"attempt": attempt + 1, "delay_s": 0.0}, step=step))
            batch.append(Event(ev.STEP_STARTED, {"attempt": failures + 1, "kind": "python"}, step=step, agent=step))
            batch.append(Event(ev.STEP_OUTPUT, {"output": {"step": step, "n": i}, "attempt": failures + 1},
                               step=step, agent=step))  # fmt: skip
            if len(batch) >= 5000:
                await log.emit(*batch)
                batch = []
        await log.emit(*batch)
        await log.close()
        return run_id


def raw_read(db: Path, run_id: str) -> tuple[float, int]:
    start = time.perf_counter()
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT r.seq, r.ts, r.headers, r.body FROM records r JOIN streams s ON s.id = r.stream_id "
        "WHERE s.name = ? ORDER BY r.seq",
        (control_stream(run_id),),
    ).fetchall()
    conn.close()
    return time.perf_counter() - start, len(rows)


async def resume_once(db: Path, run_id: str, *, snapshots: bool) -> float:
    """Seconds from resume_run's call to the report step's step.started being durable."""
    async with SqliteStore(db) as store:
        if not snapshots:
            await store.delete(snapshot_stream(run_id))
        started: list[float] = []

        def on_event(event: Event) -> None:
            if event.type == ev.STEP_STARTED and event.step == "report" and not started:
                started.append(time.perf_counter())

        begin = time.perf_counter()
        state = await api.resume_run(store, run_id, RunOptions(on_event=on_event, use_cache=False))
        assert state.status == "succeeded", {k: v.error for k, v in state.steps.items() if v.status != "succeeded"}
        return started[0] - begin


def cli_once(db: Path, run_id: str) -> float:
    begin = time.time()
    subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "resume", run_id, "--quiet"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip

    async def started_at() -> float:
        async with SqliteStore(db) as store:
            events = await read_events(store, control_stream(run_id))
        ts = [e.timestamp for e in events if e.type == ev.STEP_STARTED and e.step == "report"]
        return ts[-1] / 1000

    return asyncio.run(started_at()) - begin


def copy(db: Path, to: Path) -> Path:
    source = sqlite3.connect(db)
    target = sqlite3.connect(to)
    source.backup(target)
    source.close()
    target.close()
    return to


def main() -> None:
    sys.path.insert(0, str(ROOT))  # the agent is `bench.resume_agents:quick`, as the CLI run sees it
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = folder / "base.db"
        begin = time.perf_counter()
        run_id = asyncio.run(build(base, args.events))
        _, count = raw_read(base, run_id)
        print(f"built a control stream of {count:,} records in {time.perf_counter() - begin:.1f} s")
        resume, raw, full, cli = [], [], [], []
        for rep in range(reps):
            resume.append(asyncio.run(resume_once(copy(base, folder / f"a{rep}.db"), run_id, snapshots=True)))
            raw.append(raw_read(base, run_id)[0])
            if rep == 0 or not args.quick:
                full.append(asyncio.run(resume_once(copy(base, folder / f"b{rep}.db"), run_id, snapshots=False)))
                cli.append(cli_once(copy(base, folder / f"c{rep}.db"), run_id))
        med = statistics.median
        print(
            f"resume from a snapshot {med(resume):.3f} s; full fold {med(full):.3f} s; "
            f"raw sqlite3 read {med(raw):.3f} s"
        )
        print(f"`parallax resume` in a new process, spawn to the first new step: {med(cli):.3f} s")
        print(f"RESULT resume_s={med(resume):.3f} raw_read_s={med(raw):.3f} ratio={med(resume) / med(raw):.2f}")


if __name__ == "__main__":
    main()
