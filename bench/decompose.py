"""Decomposition on real history: would parallel agents following the plan have collided?

    python bench/decompose.py REPO [--tasks N] [--replay C] [--history H]

REPO is a git repository (a bare mirror works). The graph is built at a cut point C commits
before HEAD from the H commits before it; the files there are partitioned into N tasks by the
planner and into as many tasks as the planner ended with (merging import cycles can leave
fewer) by a naive split (whole directories, balanced by file count). Then the C commits
after the cut are replayed: a commit whose changed files fall into two or more tasks of the same
wave (tasks that would run at the same time) is a collision parallel agents would have had.
Collision rates are collisions over replayed commits that touch at least one partitioned file.
Last line:

    RESULT planner_collision=A naive_collision=B ratio=A/B width=W graph_s=S files=F
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from parallax.planner.decompose import decompose, naive
from parallax.planner.graph import build_graph, git_dir


def replay(repo: Path, cut: str, head: str) -> list[list[str]]:
    out = subprocess.run(
        ["git", f"--git-dir={git_dir(repo)}", "log", "--no-merges", "--no-renames", "--format=%x00", "--name-only",
         f"{cut}..{head}"],
        capture_output=True, check=True,
    ).stdout.decode(errors="replace")  # fmt: skip
    return [[line for line in chunk.splitlines() if line] for chunk in out.split("\0") if chunk.strip()]


def collision_rate(commits: list[list[str]], task_of: dict[str, str], wave_of: dict[str, int]) -> tuple[float, int]:
    considered = collided = 0
    for files in commits:
        tasks = {task_of[f] for f in files if f in task_of}
        if not tasks:
            continue
        considered += 1
        waves = [wave_of[t] for t in tasks]
        if len(waves) != len(set(waves)):
            collided += 1
    return (collided / considered if considered else 0.0), considered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--replay", type=int, default=300, help="commits after the cut to replay")
    parser.add_argument("--history", type=int, default=2000, help="commits before the cut for co-change")
    args = parser.parse_args()
    repo: Path = args.repo
    head = subprocess.run(["git", f"--git-dir={git_dir(repo)}", "rev-parse", "HEAD"], capture_output=True,
                          check=True).stdout.decode().strip()  # fmt: skip
    cut = subprocess.run(["git", f"--git-dir={git_dir(repo)}", "rev-list", "--no-merges", f"--skip={args.replay}",
                          "-n1", head], capture_output=True, check=True).stdout.decode().strip()  # fmt: skip
    graph = build_graph(repo, cut, args.history)
    plan = decompose(graph, args.tasks)
    commits = replay(repo, cut, head)
    task_of = {f: t.id for t in plan.tasks for f in t.files}
    wave_of = {t: i for i, wave in enumerate(plan.waves) for t in wave}
    planner_rate, considered = collision_rate(commits, task_of, wave_of)
    groups = naive(graph, len(plan.tasks))  # the same number of tasks the planner ended with
    naive_of = {f: f"n{i}" for i, group in enumerate(groups) for f in group}
    naive_rate, _ = collision_rate(commits, naive_of, dict.fromkeys(set(naive_of.values()), 0))
    files = sum(len(t.files) for t in plan.tasks)
    print(f"{repo}: cut {cut[:10]}, {len(commits)} commits replayed ({considered} touch partitioned files)")
    print(
        f"planner: {len(plan.tasks)} tasks (asked for {args.tasks}), waves {[len(w) for w in plan.waves]}, "
        f"coupling risk {plan.coupling_risk:.3f}"
    )
    print(f"naive:   {len(groups)} tasks, one wave")
    ratio = planner_rate / naive_rate if naive_rate else float("nan")
    print(
        f"RESULT planner_collision={planner_rate:.4f} naive_collision={naive_rate:.4f} ratio={ratio:.3f} "
        f"width={plan.width} graph_s={graph.build_s:.2f} files={files}"
    )


if __name__ == "__main__":
    main()
