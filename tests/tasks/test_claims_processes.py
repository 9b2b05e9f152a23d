"""Eight processes claim from one SQLite store over 500 tasks with overlapping write sets and
dependencies; some workers stall past their lease. Checked from the raw log and the workers'
own work logs, independently of the fold:
- no task is ever held by two live leases at once;
- no two tasks whose write sets overlap are ever held at the same time;
- no task is lost: every one succeeds exactly once (a stalled worker's late report is refused);
- a worker only works on a task while it holds it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

from parallax.core.events import decode_event
from parallax.core.plan import AgentSpec
from parallax.core.tasks import TaskBoard, TaskGraphSpec, TaskSpec, write_sets_overlap
from parallax.streams.sqlite import SqliteStore
from tests.processes import reap

ROOT = Path(__file__).resolve().parents[2]
N_TASKS = 500
WORKERS = 8


def graph(lease_s: float = 0.4) -> TaskGraphSpec:
    agent = AgentSpec(kind="command", command="true")
    tasks = []
    for i in range(N_TASKS):
        writes = (f"src/pkg{i % 6}/*.py",) if i % 9 == 0 else (f"src/pkg{i % 6}/m{i % 25}.py",)
        after = (f"t{i - 7}",) if i % 5 == 0 and i >= 7 else ()
        tasks.append(TaskSpec(id=f"t{i}", writes=writes, after=after, agent=agent))
    return TaskGraphSpec(tasks=tuple(tasks), lease_s=lease_s)


async def raw_events(db: Path, run_id: str) -> list[Any]:
    async with SqliteStore(db) as store:
        records = await store.read_all(f"runs/{run_id}/control")
    return [e for r in records if (e := decode_event(r.headers, r.body, r.seq_num, r.timestamp)) is not None]


def test_eight_processes_claim_500_tasks_without_double_holds(tmp_path: Path) -> None:
    spec = graph()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    db = tmp_path / "claims.db"
    asyncio.run(_create(db))
    logs = [tmp_path / f"w{i}.log" for i in range(WORKERS)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tasks.claim_worker",
                str(db),
                "r",
                str(spec_file),
                f"w{i}",
                str(logs[i]),
                "0.01",
                str(i),
            ],
            cwd=ROOT,
        )
        for i in range(WORKERS)
    ]
    try:
        for proc in procs:
            assert proc.wait(timeout=240) == 0
    finally:
        for proc in procs:
            reap(proc)

    events = asyncio.run(raw_events(db, "r"))
    board = TaskBoard.of(spec)
    for event in events:
        board.apply(event.type, event.data, event.timestamp)
    assert all(t.status == "succeeded" for t in board.tasks.values()), "a task was lost"
    successes = [e for e in events if e.type == "task.succeeded"]
    accepted_successes = {(e.data["task"], e.data["attempt"]) for e in successes}
    assert {t.id for t in board.tasks.values()} == {task for task, _ in accepted_successes}

    # Holding intervals from the raw records: a claim holds from its timestamp until its
    # worker's accepted finish, or until its lease (extended by heartbeats) ran out.
    holds: list[tuple[str, int, int, str]] = []
    for claim in (e for e in events if e.type == "task.claimed"):
        task, worker, attempt = claim.data["task"], claim.data["worker"], claim.data["attempt"]
        end = int(claim.data["lease_until"])
        for later in events:
            if later.seq_num <= claim.seq_num or later.data.get("task") != task:
                continue
            if later.data.get("worker") == worker and later.data.get("attempt") == attempt:
                if later.type == "task.heartbeat" and later.timestamp < end:
                    end = max(end, int(later.data["lease_until"]))
                elif later.type in ("task.succeeded", "task.failed", "task.released") and later.timestamp < end:
                    end = later.timestamp
                    break
        holds.append((task, claim.timestamp, end, worker))
    by_task: dict[str, list[tuple[int, int]]] = {}
    for task, start, end, _ in holds:
        by_task.setdefault(task, []).append((start, end))
    for task, spans in by_task.items():
        spans.sort()
        for (_, end_a), (start_b, _) in pairwise(spans):
            assert start_b >= end_a, f"{task} held twice at once"
    writes = {t.id: t.writes for t in spec.tasks}
    holds.sort(key=lambda h: h[1])
    for (ta, sa, ea, _), (tb, sb, eb, _) in combinations(holds, 2):
        if ta != tb and sa < eb and sb < ea:
            assert not write_sets_overlap(writes[ta], writes[tb]), f"{ta} and {tb} overlap and ran together"

    # The workers' own logs: every piece of work happened inside that worker's hold.
    work = [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]
    starts = [w for w in work if "start" in w]
    assert len({(w["task"], w["attempt"]) for w in starts}) == len(starts)
    stale = [w for w in work if "end" in w and not w["accepted"]]
    assert len(starts) >= N_TASKS
    # Stalled workers did lose tasks to others, and their late reports were refused.
    takeovers = sum(1 for spans in by_task.values() if len(spans) > 1)
    assert takeovers >= 1
    assert all(not w["accepted"] for w in stale)


async def _create(db: Path) -> None:
    async with SqliteStore(db) as store:
        await store.create("runs/r/control")
