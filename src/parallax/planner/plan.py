"""From a goal to a task-graph pattern: propose (a planner agent, or the graph alone), repair,
and write YAML the parallel-coding engine runs as it is.

The repair is what makes a model's proposal safe to run: files are assigned at most once
(first proposal wins), unknown files are dropped, files nobody took go to the task they are
most coupled to, an import cycle or a strongly co-changing group split across tasks is moved
whole into the task holding most of it, and then contracts and dependencies are derived from
the graph (tasks importing each other in a cycle are re-cut so the task graph is a DAG).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, Field

from parallax.planner.decompose import Decomposition, affinity, assemble, decompose, in_scope, units
from parallax.planner.graph import CodeGraph


class ProposedTask(BaseModel):
    name: str
    goal: str
    files: list[str] = Field(default_factory=list)


class Proposal(BaseModel):
    """What a planner agent returns: tasks, each with the files it should change."""

    tasks: list[ProposedTask] = Field(min_length=1)


def repair(graph: CodeGraph, proposal: Proposal, scope: Sequence[str] = ()) -> tuple[Decomposition, list[str]]:
    files = in_scope(graph, scope)
    chosen = set(files)
    notes: list[str] = []
    groups: list[list[str]] = []
    goals: list[str] = []
    owner: dict[str, int] = {}
    for task in proposal.tasks:
        mine: list[str] = []
        for path in task.files:
            if path not in chosen:
                notes.append(f"{task.name}: dropped {path} (not a file in scope)")
            elif path in owner:
                notes.append(f"{task.name}: {path} already belongs to {proposal.tasks[owner[path]].name}")
            else:
                owner[path] = len(groups)
                mine.append(path)
        groups.append(mine)
        goals.append(task.goal)
    uf = units(graph, files)
    members: dict[str, list[str]] = defaultdict(list)
    for path in files:
        members[uf.find(path)].append(path)
    for unit in members.values():
        holders = {owner[p] for p in unit if p in owner}
        if len(holders) > 1:
            keep = max(holders, key=lambda i: sum(1 for p in unit if owner.get(p) == i))
            for path in unit:
                if path in owner and owner[path] != keep:
                    groups[owner[path]].remove(path)
                    groups[keep].append(path)
                    owner[path] = keep
            notes.append(f"kept {len(unit)} coupled files together in {proposal.tasks[keep].name}")
    weights = affinity(graph, chosen)
    link: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (a, b), w in weights.items():
        link[a].append((b, w))
        link[b].append((a, w))
    leftovers = [p for p in files if p not in owner]
    for path in leftovers:
        scores: dict[int, float] = defaultdict(float)
        for other in members[uf.find(path)]:
            for neighbour, w in link[other]:
                if neighbour in owner:
                    scores[owner[neighbour]] += w
        fallback = min(range(len(groups)), key=lambda i: len(groups[i]))
        best = max(scores, key=lambda i: scores[i]) if scores else fallback
        for unit_file in members[uf.find(path)]:
            if unit_file not in owner:
                owner[unit_file] = best
                groups[best].append(unit_file)
    if leftovers:
        notes.append(f"assigned {len(leftovers)} file(s) no task took to the task they are most coupled to")
    kept = [(g, goal) for g, goal in zip(groups, goals, strict=True) if g]
    result = assemble(graph, [sorted(g) for g, _ in kept], weights)
    by_file = {f: goal for g, goal in kept for f in g}
    for planned in result.tasks:
        planned.goal = by_file.get(planned.files[0], "")
    return result, notes + result.notes


async def propose(graph: CodeGraph, goal: str, n: int, model: str, scope: Sequence[str] = ()) -> Proposal:
    """Ask a model for a proposal, showing it the files in scope, the import cycles and the
    strongest couplings."""
    from pydantic_ai import Agent

    from parallax.agents.llm import build_model
    from parallax.core.plan import AgentSpec

    files = in_scope(graph, scope)
    cycles = [c for c in graph.cycles() if set(c) & set(files)][:20]
    couplings = sorted(((w, a, b) for (a, b), w in graph.cochange.items() if a in files and b in files), reverse=True)
    prompt = (
        f"Goal: {goal}\n\nSplit the work into at most {n} tasks that parallel coding agents can do at once. "
        "Give each task a short name, its goal, and the files it should change; a file belongs to one task.\n\n"
        f"Files ({len(files)}):\n" + "\n".join(files[:1500])
        + "\n\nImport cycles (keep each in one task):\n" + "\n".join(", ".join(c) for c in cycles)
        + "\n\nFiles that change together (weight, a, b):\n"
        + "\n".join(f"{w:.1f} {a} {b}" for w, a, b in couplings[:60])
    )  # fmt: skip
    spec = AgentSpec(kind="llm", model=model)
    agent: Agent[None, Proposal] = Agent(build_model(spec, "planner", dict(os.environ)), output_type=Proposal)
    result = await agent.run(prompt)
    return result.output


def to_pattern(
    plan: Decomposition, goal: str, name: str, agent: dict[str, Any], verify: str | None = None, workers: int = 4
) -> str:
    doc: dict[str, Any] = {"pattern": "tasks", "name": name, "workers": max(1, min(workers, plan.width or 1))}
    if verify:
        doc["verify"] = verify
    tasks: dict[str, Any] = {}
    for task in plan.tasks:
        prompt = f"{goal}\n\nYour part: {task.goal}" if task.goal else goal
        shown = ", ".join(task.files[:10]) + (f" and {len(task.files) - 10} more" if len(task.files) > 10 else "")
        prompt += f"\nChange only the files in your write set ({shown})."
        entry: dict[str, Any] = {"prompt": prompt, "writes": task.files}
        if task.contracts:
            entry["contracts"] = task.contracts
        if task.reads:
            entry["reads"] = task.reads
        if task.after:
            entry["after"] = task.after
        entry["agent"] = agent
        tasks[task.id] = entry
    doc["tasks"] = tasks
    header = (
        f"# Planned by `parallax plan` for: {goal}\n"
        f"# {len(plan.tasks)} tasks, width {plan.width}, critical path {plan.critical_path}, "
        f"coupling risk {plan.coupling_risk:.3f}\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def plan_offline(graph: CodeGraph, n: int, scope: Sequence[str] = ()) -> Decomposition:
    return decompose(graph, n, scope)
