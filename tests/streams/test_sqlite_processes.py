"""SQLite store behaviour across real processes sharing one file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from parallax.streams.sqlite import SqliteStore
from tests.processes import reap

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.streams.procs", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


async def test_racing_conditional_appends_across_processes_exactly_one_wins(tmp_path: Path) -> None:
    db = str(tmp_path / "race.db")
    async with SqliteStore(db) as store:
        await store.create("s")
    rounds = 300
    go = tmp_path / "go"
    procs = [spawn("race", db, "s", str(rounds), f"p{i}", str(go)) for i in range(4)]
    wins: dict[str, list[int]] = {}
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        for i, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            wins[f"p{i}"] = [int(line) for line in out.split()]
    finally:
        for proc in procs:
            reap(proc)
    all_wins = sorted(seq for seqs in wins.values() for seq in seqs)
    assert all_wins == list(range(rounds)), "every seq won exactly once"
    async with SqliteStore(db) as store:
        records = await store.read_all("s")
    assert len(records) == rounds
    for record in records:
        winner, seq = record.body.decode().split(":")
        assert int(seq) == record.seq_num
        assert record.seq_num in wins[winner]
    assert sum(1 for seqs in wins.values() if seqs) >= 2, "the processes really raced"


async def test_tail_sees_another_process_append(tmp_path: Path) -> None:
    db = str(tmp_path / "tail.db")
    async with SqliteStore(db) as store:
        await store.create("s")
        proc = spawn("append-lines", db, "s", stdin=subprocess.PIPE)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            received: list[tuple[bytes, float]] = []

            async def follow() -> None:
                async for record in store.tail("s"):
                    received.append((record.body, time.perf_counter()))
                    if len(received) == 5:
                        return

            task = asyncio.create_task(follow())
            loop = asyncio.get_running_loop()
            for i in range(5):
                proc.stdin.write(f"line {i}\n")
                proc.stdin.flush()
                await loop.run_in_executor(None, proc.stdout.readline)  # acknowledged by the other process
            await asyncio.wait_for(task, 60)
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0
        finally:
            reap(proc)
    assert [body for body, _ in received] == [f"line {i}".encode() for i in range(5)]


async def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    db = str(tmp_path / "crash.db")
    for attempt in range(3):
        proc = spawn("append-forever", db, f"s{attempt}", "16")
        try:
            assert proc.stdout is not None
            acked: list[tuple[int, str]] = []
            deadline = time.monotonic() + 120  # a deadline: it only matters if the appends stop
            while len(acked) < 300 + 200 * attempt and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line:
                    seq, body = line.split()
                    acked.append((int(seq), body))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            reap(proc)
        async with SqliteStore(db) as store:
            records = {r.seq_num: r.body.decode() for r in await store.read_all(f"s{attempt}")}
        assert len(acked) >= 300
        for seq, body in acked:
            assert records.get(seq) == body, f"acknowledged record {seq} lost after SIGKILL"
        assert sorted(records) == list(range(len(records))), "seq_nums stay contiguous"
