"""Task graph benchmark: claims racing on one SQLite store, and worktree creation.

    python bench/taskgraph.py [--quick] [--reps N]

The last line is

    RESULT claims_per_s=A double_claims=B worktree_ms=C

- claims_per_s: successful claims per second with 8 processes racing (conditional appends at
  the tail they folded) over a graph of tasks with overlapping write sets and dependencies;
  each claim is followed by the task's start and finish records, as a real worker's would be.
  Median over the repetitions.
- double_claims: tasks ever held by two live leases at once, computed from the raw control log
  (every claim record, accepted or not), over all repetitions; must be 0.
- worktree_ms: median time to create a task worktree (`git worktree add` on a new branch, as
  the workspaces do) of a 1,000-file repository.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parallax.core.events import decode_event
from parallax.core.plan import AgentSpec
from parallax.core.tasks import TaskGraphSpec, TaskSpec
from parallax.streams.sqlite import SqliteStore
from parallax.workspaces import git

HERE = Path(__file__).resolve().parent
WORKERS = 8


def graph(n: int) -> TaskGraphSpec:
    agent = AgentSpec(kind="command", command="true")
    tasks = [
        TaskSpec(
            id=f"t{i}",
            writes=(f"src/pkg{i % 8}/m{i % 40}.py",),
            after=(f"t{i - 9}",) if i % 6 == 0 and i >= 9 else (),
            agent=agent,
        )
        for i in range(n)
    ]
    return TaskGraphSpec(tasks=tuple(tasks), lease_s=30)


async def double_claims(db: Path) -> tuple[int, int]:
    """(tasks held twice at once, successful claims), from the raw log."""
    async with SqliteStore(db) as store:
        records = await store.read_all("runs/bench/control")
    events = [e for r in records if (e := decode_event(r.headers, r.body, r.seq_num, r.timestamp)) is not None]
    spans: dict[str, list[tuple[int, int]]] = {}
    open_claims: dict[tuple[str, str, int], tuple[int, int]] = {}
    for event in events:
        data = event.data
        key = (data["task"], data["worker"], data["attempt"])
        if event.type == "task.claimed":
            open_claims[key] = (event.timestamp, int(data["lease_until"]))
        elif event.type in ("task.succeeded", "task.failed", "task.released") and key in open_claims:
            start, lease = open_claims.pop(key)
            spans.setdefault(data["task"], []).append((start, min(lease, event.timestamp)))
    for (task, _, _), (start, lease) in open_claims.items():
        spans.setdefault(task, []).append((start, lease))
    doubles = 0
    for held in spans.values():
        held.sort()
        if any(b[0] < a[1] for a, b in itertools.pairwise(held)):
            doubles += 1
    return doubles, sum(1 for e in events if e.type == "task.claimed")


def claims_run(folder: Path, n: int) -> tuple[float, int]:
    spec_file = folder / "spec.json"
    spec_file.write_text(graph(n).model_dump_json())
    db = folder / "claims.db"

    async def create() -> None:
        async with SqliteStore(db) as store:
            await store.create("runs/bench/control")

    asyncio.run(create())
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "taskgraph_worker.py"), str(db), "bench", str(spec_file), f"w{i}"])
        for i in range(WORKERS)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a worker failed")
    wall = time.perf_counter() - started
    doubles, claims = asyncio.run(double_claims(db))
    return claims / wall, doubles


def worktree_ms(folder: Path, reps: int) -> float:
    repo = folder / "repo"
    for i in range(1000):
        path = repo / f"pkg{i % 20}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 20)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"], cwd=repo, check=True)

    async def measure() -> list[float]:
        times = []
        base = await git.head(repo)
        for i in range(reps):
            target = folder / "worktrees" / f"t{i}"
            start = time.perf_counter()
            await git.add_worktree(repo, target, f"parallax/bench/t{i}", base)
            times.append((time.perf_counter() - start) * 1000)
        return times

    return statistics.median(asyncio.run(measure()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="400 tasks, 3 repetitions (under a minute)")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    n = 400 if args.quick else 1000
    reps = args.reps or (3 if args.quick else 5)
    rates: list[float] = []
    doubles = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            folder = Path(tmp) / f"rep{rep}"
            folder.mkdir()
            rate, twice = claims_run(folder, n)
            rates.append(rate)
            doubles += twice
            print(f"claims: {n} tasks, {WORKERS} processes: {rate:.0f} claims/s, {twice} double claims", flush=True)
        wt = worktree_ms(Path(tmp), 9 if args.quick else 21)
        print(f"worktree of a 1,000-file repository: median {wt:.1f} ms")
    print(f"RESULT claims_per_s={statistics.median(rates):.0f} double_claims={doubles} worktree_ms={wt:.1f}")


if __name__ == "__main__":
    main()
