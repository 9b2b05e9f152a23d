"""Decomposition on real history: would parallel agents following the plan have collided, and
how parallel is the plan?

    python bench/decompose.py REPO [REPO ...] [--tasks N] [--replay C] [--history H]

Each REPO is a git repository (a bare mirror works). The graph is built at a cut point C
commits before HEAD from the H commits before it; the files there are partitioned into N tasks
by the planner, and by a naive split (whole directories, balanced by file count, all in one
wave) twice: into as many tasks as the planner ended with (merging import cycles can leave
fewer), and into as many tasks as the planner's width (the same number of parallel groups).
Then the C commits after the cut are replayed: a commit whose changed files fall into two or
more tasks of the same wave (tasks that would run at the same time) is a collision parallel
agents would have had. Collision rates are collisions over replayed commits that touch at least
one partitioned file.

- ratio: planner collision rate / naive collision rate at the same number of tasks;
- naive_same_width_ratio: planner collision rate / naive collision rate with the planner's width;
- width: the most tasks in one wave (waves: a task runs one wave after the latest it depends on);
- speedup: total work / critical-path work, where a task's work is the lines of the files in its
  write set (at the cut) and the critical path is the heaviest chain of dependencies.

One line per repository, then the last line (with several repositories: the worst of each
figure, the largest ratios and the smallest width and speedup; rates are means):

    RESULT planner_collision=A naive_collision=B ratio=A/B width=W naive_same_width_ratio=A/B'
           speedup=S graph_s=S files=F
"""

from __future__ import annotations

import argparse
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from parallax.planner.decompose import Decomposition, decompose, naive
from parallax.planner.graph import CodeGraph, build_graph, git_dir


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


def naive_rate(graph: CodeGraph, commits: list[list[str]], n: int) -> float:
    groups = naive(graph, n)
    naive_of = {f: f"n{i}" for i, group in enumerate(groups) for f in group}
    return collision_rate(commits, naive_of, dict.fromkeys(set(naive_of.values()), 0))[0]


def _ratio(a: float, b: float) -> float:
    return a / b if b else (0.0 if a == 0 else float("nan"))


@dataclass
class Figures:
    name: str
    planner: float
    naive: float
    naive_same_width: float
    width: int
    speedup: float
    graph_s: float
    files: int

    @property
    def ratio(self) -> float:
        return _ratio(self.planner, self.naive)

    @property
    def same_width_ratio(self) -> float:
        return _ratio(self.planner, self.naive_same_width)


def measure(graph: CodeGraph, plan: Decomposition, commits: list[list[str]], name: str) -> Figures:
    task_of = {f: t.id for t in plan.tasks for f in t.files}
    wave_of = {t: i for i, wave in enumerate(plan.waves) for t in wave}
    planner_rate, _ = collision_rate(commits, task_of, wave_of)
    return Figures(
        name=name,
        planner=planner_rate,
        naive=naive_rate(graph, commits, len(plan.tasks)),  # the same number of tasks the planner ended with
        naive_same_width=naive_rate(graph, commits, plan.width),  # as many parallel groups as the plan has
        width=plan.width,
        speedup=plan.speedup,
        graph_s=graph.build_s,
        files=len(task_of),
    )


def result_line(figures: list[Figures]) -> str:
    def worst(values: list[float]) -> float:
        return math.nan if any(math.isnan(v) for v in values) else max(values)

    return (
        f"RESULT planner_collision={sum(f.planner for f in figures) / len(figures):.4f} "
        f"naive_collision={sum(f.naive for f in figures) / len(figures):.4f} "
        f"ratio={worst([f.ratio for f in figures]):.3f} width={min(f.width for f in figures)} "
        f"naive_same_width_ratio={worst([f.same_width_ratio for f in figures]):.3f} "
        f"speedup={min(f.speedup for f in figures):.2f} graph_s={sum(f.graph_s for f in figures):.2f} "
        f"files={sum(f.files for f in figures)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repos", type=Path, nargs="+", metavar="REPO")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--replay", type=int, default=300, help="commits after the cut to replay")
    parser.add_argument("--history", type=int, default=2000, help="commits before the cut for co-change")
    args = parser.parse_args()
    figures: list[Figures] = []
    for repo in args.repos:
        head = subprocess.run(["git", f"--git-dir={git_dir(repo)}", "rev-parse", "HEAD"], capture_output=True,
                              check=True).stdout.decode().strip()  # fmt: skip
        cut = subprocess.run(["git", f"--git-dir={git_dir(repo)}", "rev-list", "--no-merges",
                              f"--skip={args.replay}", "-n1", head],
                             capture_output=True, check=True).stdout.decode().strip()  # fmt: skip
        graph = build_graph(repo, cut, args.history)
        plan = decompose(graph, args.tasks)
        commits = replay(repo, cut, head)
        name = repo.name if repo.name not in ("repo", ".git") else repo.parent.name
        f = measure(graph, plan, commits, name)
        figures.append(f)
        print(f"{repo}: cut {cut[:10]}, {len(commits)} commits replayed")
        print(
            f"  planner: {len(plan.tasks)} tasks (asked for {args.tasks}), waves {[len(w) for w in plan.waves]}, "
            f"coupling risk {plan.coupling_risk:.3f}, work {sum(plan.work.values())} lines, "
            f"critical path {plan.critical_work} lines"
        )
        print(
            f"  {name}: planner_collision={f.planner:.4f} naive_collision={f.naive:.4f} ratio={f.ratio:.3f} "
            f"width={f.width} naive_same_width_collision={f.naive_same_width:.4f} "
            f"naive_same_width_ratio={f.same_width_ratio:.3f} speedup={f.speedup:.2f}"
        )
    print(result_line(figures))


if __name__ == "__main__":
    main()
