"""Distributed runs on a real nats-server, under failure: worker processes SIGKILLed mid-task,
the server SIGKILLed and restarted mid-run, the coordinator paused until another took over.

What must hold each time: the run completes; every step's output is recorded exactly once;
no execution of a step starts after its output was recorded; every acknowledged record is in
the log once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallax.core import events as ev
from parallax.core.errors import FencingTokenMismatch
from parallax.core.plan import AgentSpec, MergeSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import control_stream, read_events
from parallax.engine.lease import Leases
from parallax.engine.work import work_stream
from parallax.engine.worker import submit
from parallax.streams import AppendInput, AppendRecord
from parallax.streams.nats import NatsStore
from parallax.streams.nats_server import NatsServer
from tests.processes import exit_code, reap
from tests.waiting import async_wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def fan_plan(folder: Path, steps: int, sleep: float, held: int = 0) -> Plan:
    """`steps` agent steps of `sleep` seconds, the last `held` of them finishing only once the
    file `release` in `folder` exists; then a merge."""
    fan = [
        Step(id=f"s{i:02d}", kind="agent", agent=AgentSpec(kind="python", ref="tests.distributed.agents:slow"))
        for i in range(steps)
    ]
    merge = Step(id="merge", kind="merge", after=tuple(s.id for s in fan), merge=MergeSpec(ignore=("step", "value")))
    inputs = {"dir": str(folder), "sleep": sleep, "release": str(folder / "release"),
              "held": [s.id for s in fan[steps - held :]]}  # fmt: skip
    return Plan(name="fan", steps=(*fan, merge), inputs=inputs, concurrency=steps)


def start_worker(url: str, name: str, folder: Path, run_id: str, *args: str) -> subprocess.Popen[bytes]:
    """A `parallax worker` process serving `run_id` until it is closed. (Serving every run, a
    worker exits when idle only once it has done some work: one that another worker left
    nothing to would never exit.)"""
    out = open(folder / f"{name}.out", "wb")  # noqa: SIM115 - the child owns it
    command = [sys.executable, "-X", "faulthandler", "-m", "parallax", "--store", url, "worker", "--name", name, "--run", run_id,
               "--exit-when-idle", *args]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return process


def executions(folder: Path) -> list[tuple[str, int, int]]:
    path = folder / "executions"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(step, int(pid), int(ms)) for step, pid, ms in (line.split() for line in lines)]


async def check_exactly_once(store: NatsStore, run_id: str, folder: Path, steps: int) -> None:
    state = await api.load_run(store, run_id)
    assert state.status == "succeeded", state.status
    control = await read_events(store, control_stream(run_id))
    outputs = [e for e in control if e.type == ev.STEP_OUTPUT]
    assert Counter(e.step for e in outputs) == Counter({f"s{i:02d}": 1 for i in range(steps)} | {"merge": 1})
    recorded_at = {e.step: e.timestamp for e in outputs}
    for step, pid, started in executions(folder):
        assert started <= recorded_at[step], f"{step} started again (pid {pid}) after its output was recorded"
    work = await read_events(store, work_stream(run_id))
    done = Counter(e.data["id"].split("#")[0] for e in work if e.type == ev.WORK_DONE)
    assert all(n >= 1 for n in done.values())
    records = await store.read_all(control_stream(run_id))
    assert [r.seq_num for r in records] == list(range(len(records)))


async def test_a_worker_killed_mid_task_is_replaced(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with NatsStore(server.url) as store:
            run_id = await api.create_run(store, fan_plan(tmp_path, 10, 1.5), run_id="killw")
            await submit(store, run_id)
            lease = ("--lease", "2", "--attempt-lease", "2", "--slots", "4")
            victim = start_worker(server.url, "victim", tmp_path, run_id, *lease)
            workers.append(victim)

            async def victim_busy() -> bool:
                return sum(1 for _, pid, _ in executions(tmp_path) if pid == victim.pid) >= 2

            await async_wait_until(victim_busy, timeout=120, what="the victim to start attempts")
            workers.append(start_worker(server.url, "survivor", tmp_path, run_id, *lease))
            os.kill(victim.pid, signal.SIGKILL)  # while it holds the attempts it started
            victim.wait()
            survivor = workers[1]
            assert exit_code(survivor, tmp_path / "survivor.out") == 0, (tmp_path / "survivor.out").read_text()
            await check_exactly_once(store, run_id, tmp_path, 10)
            by_victim = {step for step, pid, _ in executions(tmp_path) if pid == victim.pid}
            rerun = {step for step, n in Counter(s for s, _, _ in executions(tmp_path)).items() if n > 1}
            assert rerun, "the killed worker's attempts had to run again elsewhere"
            assert rerun <= by_victim  # only what the dead worker held ran twice
    finally:
        for process in workers:
            reap(process)
        server.kill()


async def test_nats_server_killed_and_restarted_five_times(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with NatsStore(server.url) as store:
            # the last 8 steps end only once the restarts are over: the run is under way through all of them
            run_id = await api.create_run(store, fan_plan(tmp_path, 24, 1.2, held=8), run_id="restarts")
            await submit(store, run_id)
            for name in ("w1", "w2"):
                workers.append(start_worker(server.url, name, tmp_path, run_id, "--lease", "3", "--slots", "2"))
            witness: dict[int, bytes] = {}

            async def write_witness() -> None:
                for i in range(100_000):
                    body = f"w{i}".encode()
                    ack = await store.append("witness", AppendInput([AppendRecord(body)]))
                    witness[ack.start.seq_num] = body
                    await asyncio.sleep(0.01)

            def served_after(count: int) -> Callable[[], bool]:
                return lambda: len(witness) >= count + 40

            def disconnected(client: Any) -> Callable[[], bool]:
                return lambda: not client.is_connected

            writer = asyncio.create_task(write_witness())
            for _ in range(5):
                # the server serves a while between restarts: 40 more witness appends
                await async_wait_until(served_after(len(witness)), timeout=120, what="the restarted server")
                assert not (await api.load_run(store, run_id)).finished, "the run ended before the restarts did"
                server.kill()
                # down until the test's own client has seen it go (the workers' clients see it too)
                client, _ = await store._conn.connection()
                await async_wait_until(disconnected(client), timeout=120, what="the client seeing the outage")
                server.start()
            (tmp_path / "release").touch()
            for name, process in zip(("w1", "w2"), workers, strict=True):
                assert exit_code(process, tmp_path / f"{name}.out") == 0, (tmp_path / f"{name}.out").read_text()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await check_exactly_once(store, run_id, tmp_path, 24)
            logged = {r.seq_num: r.body for r in await store.read_all("witness")}
            assert {seq: logged.get(seq) for seq in witness} == witness, "an acknowledged record was lost"
            assert len(set(logged.values())) == len(logged), "a record was written twice"
            assert sorted(logged) == list(range(len(logged)))
    finally:
        for process in workers:
            reap(process)
        server.kill()


async def test_a_paused_coordinator_is_fenced_off(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with NatsStore(server.url) as store:
            run_id = await api.create_run(store, fan_plan(tmp_path, 8, 1.0), run_id="fence")
            await submit(store, run_id)
            lease = ("--lease", "2", "--attempt-lease", "3", "--slots", "4")
            old = start_worker(server.url, "old", tmp_path, run_id, *lease)
            workers.append(old)
            leases = Leases(store)

            async def holder_is(name: str) -> bool:
                info = await leases.info(f"run/{run_id}")
                return info is not None and info.holder == name and info.live()

            async def took_over() -> bool:
                # new has fenced the control stream (it does so only once it holds the lease). Not
                # "new holds the lease now": new may finish the whole run and release the lease
                # between two polls on a loaded machine, and the condition would never be seen.
                records = await store.read_all(control_stream(run_id))
                fenced = [r.body for r in records if r.command == b"fence"]
                return bool(fenced) and fenced[-1].startswith(b"new@")

            async def old_coordinates() -> bool:  # the lease is old's, and old has fenced the control stream
                records = await store.read_all(control_stream(run_id))
                return await holder_is("old") and any(
                    r.command == b"fence" and r.body.startswith(b"old@") for r in records
                )

            # Stopped before its fence, the old coordinator would have nothing to be fenced off from.
            await async_wait_until(old_coordinates, timeout=120, what="the first worker to coordinate and fence")
            workers.append(start_worker(server.url, "new", tmp_path, run_id, *lease))
            os.kill(old.pid, signal.SIGSTOP)
            await async_wait_until(took_over, timeout=120, what="the second worker to take over and fence")
            fences = [r for r in await store.read_all(control_stream(run_id)) if r.command == b"fence"]
            old_token = fences[0].body.decode()
            assert old_token.startswith("old@") and fences[-1].body.decode().startswith("new@")
            os.kill(old.pid, signal.SIGCONT)
            with pytest.raises(FencingTokenMismatch):  # what the old coordinator's next append meets
                await store.append(control_stream(run_id), AppendInput([AppendRecord(b"x")], fencing_token=old_token))
            for name, process in zip(("old", "new"), workers, strict=True):
                assert exit_code(process, tmp_path / f"{name}.out") == 0, (tmp_path / f"{name}.out").read_text()
            await check_exactly_once(store, run_id, tmp_path, 8)
            assert "fenced off 1" in (tmp_path / "old.out").read_text()
    finally:
        for process in workers:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
            reap(process)
        server.kill()
