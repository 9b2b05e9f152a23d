"""Distributed mode benchmark, on a real nats-server started here (loopback, temp dir).

    python bench/distributed.py [--quick] [--reps N]

The last line is

    RESULT nats_append_ratio=A workers3_speedup=B lost=C duplicated=D

- nats_append_ratio: conditional appends per second through the NATS stream store (each one
  `match_seq_num`-checked, awaited before the next) divided by plain nats-py JetStream
  publishes per second (`js.publish`, awaited one by one) of the same payloads to a stream of
  the same configuration, measured alternately in this process; median of the repetitions.
  Goal >= 0.5. Also printed: both sides with 64 appends in flight at once (the NATS store
  serialises a stream's appends from one client, plain publishes do not), and appends spread
  over 16 streams.
- workers3_speedup: a submitted run of 300 steps whose agent awaits 0.2 s, wall time (submit
  to run.finished) with 1 `parallax worker` process divided by wall time with 3; every worker
  runs with `parallax worker`'s default of 4 slots (--slots N to change). Goal >= 2.5.
- lost / duplicated: over every run, steps without a recorded output, and outputs recorded
  more than once plus executions that started after their step's output was recorded. Must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from parallax.core import events as ev
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import control_stream, read_events
from parallax.engine.worker import submit
from parallax.streams import AppendInput, AppendRecord
from parallax.streams.nats import NatsStore
from parallax.streams.nats_server import NatsServer

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"x" * 200


async def plain_publishes(url: str, n: int, inflight: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"PLAIN{time.monotonic_ns()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"plain.{name}"], allow_direct=True, allow_atomic=True))
    start = time.perf_counter()
    if inflight == 1:
        for _ in range(n):
            await js.publish(f"plain.{name}", PAYLOAD)
    else:
        for i in range(0, n, inflight):
            await asyncio.gather(*(js.publish(f"plain.{name}", PAYLOAD) for _ in range(min(inflight, n - i))))
    elapsed = time.perf_counter() - start
    await js.delete_stream(name)
    await nc.close()
    return n / elapsed


async def store_appends(url: str, n: int, inflight: int, streams: int = 1) -> float:
    async with NatsStore(url, prefix=f"B{time.monotonic_ns() % 10**9}") as store:
        names = [f"bench/{i}" for i in range(streams)]
        for name in names:
            await store.append(name, AppendInput([AppendRecord(PAYLOAD)], match_seq_num=0))
        tails = dict.fromkeys(names, 1)

        async def one(name: str) -> None:
            seq = tails[name]
            tails[name] += 1
            await store.append(name, AppendInput([AppendRecord(PAYLOAD)], match_seq_num=seq))

        start = time.perf_counter()
        if inflight == 1:
            for i in range(n):
                await one(names[i % streams])
        else:
            for i in range(0, n, inflight):
                await asyncio.gather(*(one(names[(i + k) % streams]) for k in range(min(inflight, n - i))))
        return n / (time.perf_counter() - start)


def run_plan(folder: Path, steps: int, sleep: float) -> Plan:
    agent = AgentSpec(kind="python", ref="bench.distributed_agents:wait_step")
    fan = [Step(id=f"s{i:03d}", kind="agent", agent=agent) for i in range(steps)]
    return Plan(name="bench", steps=tuple(fan), inputs={"dir": str(folder), "sleep": sleep}, concurrency=steps)


async def timed_run(url: str, workers: int, steps: int, sleep: float, slots: int) -> tuple[float, int, int]:
    """Wall time of one submitted run served by `workers` processes; (seconds, lost, duplicated)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with NatsStore(url) as store:
            run_id = f"bench-{workers}-{time.time_ns()}"
            processes = [
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "parallax", "--store", url, "worker", "--slots", str(slots),
                    "--name", f"bench-{workers}-{i}", "--run", run_id, "--exit-when-idle",
                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )
                for i in range(workers)
            ]  # fmt: skip
            for process in processes:  # each prints one line once it is serving
                assert process.stderr is not None
                await process.stderr.readline()
            await api.create_run(store, run_plan(folder, steps, sleep), run_id=run_id)
            start = time.time()
            await submit(store, run_id)
            # Wait without watching the log (a watcher here would compete for the two cores);
            # the run's own run.finished record says when it ended.
            for process in processes:
                await asyncio.wait_for(process.communicate(), 120)
            finished = [e for e in await read_events(store, control_stream(run_id)) if e.type == ev.RUN_FINISHED]
            elapsed = finished[-1].timestamp / 1000 - start
            control = await read_events(store, control_stream(run_id))
            outputs = [e for e in control if e.type == ev.STEP_OUTPUT]
            counts = Counter(e.step for e in outputs)
            recorded_at = {e.step: e.timestamp for e in outputs}
            lost = sum(1 for i in range(steps) if counts[f"s{i:03d}"] == 0)
            duplicated = sum(n - 1 for n in counts.values() if n > 1)
            for line in (folder / "executions").read_text().splitlines():
                step, _, started = line.split()
                if step in recorded_at and int(started) > recorded_at[step]:
                    duplicated += 1
            return elapsed, lost, duplicated


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--slots", type=int, default=4, help="slots per worker (default: the CLI's default, 4)")
    args = parser.parse_args()
    slots = args.slots
    reps = args.reps or (3 if args.quick else 5)
    n = 2000 if args.quick else 10_000
    steps = 300
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        url = server.url
        print(f"nats-server on {url}; {n} appends per side, {reps} repetitions")
        plain1, ours1, plain64, ours64, spread = [], [], [], [], []
        for _ in range(reps):
            plain1.append(await plain_publishes(url, n, 1))
            ours1.append(await store_appends(url, n, 1))
            plain64.append(await plain_publishes(url, n, 64))
            ours64.append(await store_appends(url, n, 64))
            spread.append(await store_appends(url, n, 64, streams=16))
        med = statistics.median
        print(f"awaited one by one: plain js.publish {med(plain1):,.0f}/s, conditional append {med(ours1):,.0f}/s")
        print(f"64 in flight, one stream: plain {med(plain64):,.0f}/s, conditional append {med(ours64):,.0f}/s")
        print(f"64 in flight over 16 streams: conditional append {med(spread):,.0f}/s")
        ratio = med([o / p for o, p in zip(ours1, plain1, strict=True)])
        lost = duplicated = 0
        one, three = [], []
        run_reps = 1 if args.quick else 3
        for _ in range(run_reps):
            seconds, l1, d1 = await timed_run(url, 1, steps, 0.2, slots)
            one.append(seconds)
            seconds, l3, d3 = await timed_run(url, 3, steps, 0.2, slots)
            three.append(seconds)
            lost += l1 + l3
            duplicated += d1 + d3
        print(
            f"{steps} steps x 0.2 s, {slots} slots per worker: 1 worker {med(one):.2f} s, 3 workers {med(three):.2f} s"
        )
        speedup = med(one) / med(three)
        print(
            f"RESULT nats_append_ratio={ratio:.2f} workers3_speedup={speedup:.2f} lost={lost} duplicated={duplicated}"
        )


if __name__ == "__main__":
    asyncio.run(main())
