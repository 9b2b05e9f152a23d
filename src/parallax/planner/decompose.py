"""Decomposition: the files in scope, partitioned into tasks whose write sets are disjoint by
construction and whose coupling across task boundaries is low.

1. Units that must not be split: every import cycle, and files with strong co-change
   coupling (changed together in at least half the commits of the less-changed one, twice or
   more), joined with union-find.
2. Units are merged greedily along the strongest affinity (import edges plus co-change
   weight, normalised by size) until N clusters remain, no cluster growing past 1.5x the
   average size while another merge is possible.
3. A file imported across a task boundary is a contract owned by its task; the importing
   tasks read it and depend on that task. Tasks that would depend on each other in a cycle are
   merged, so the task graph is a DAG.
4. The report: width (the most tasks in one wave), critical path (the longest dependency
   chain) and coupling risk (the share of all coupling weight that crosses task boundaries).
"""

from __future__ import annotations

import fnmatch
import heapq
import math
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from parallax.planner.graph import CODE, CodeGraph, strongly_connected

STRONG_SHARE = 0.5
STRONG_MIN = 2.0


@dataclass
class PlannedTask:
    id: str
    files: list[str]
    contracts: list[str] = field(default_factory=list[str])
    reads: list[str] = field(default_factory=list[str])
    after: list[str] = field(default_factory=list[str])
    goal: str = ""


@dataclass
class Decomposition:
    tasks: list[PlannedTask]
    width: int
    critical_path: int
    coupling_risk: float
    waves: list[list[str]]
    notes: list[str] = field(default_factory=list[str])

    def report(self) -> dict[str, Any]:
        return {
            "tasks": len(self.tasks),
            "width": self.width,
            "critical_path": self.critical_path,
            "coupling_risk": round(self.coupling_risk, 4),
            "waves": self.waves,
            "notes": self.notes,
        }


class _UnionFind:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {i: i for i in items}

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def in_scope(graph: CodeGraph, scope: Sequence[str] = ()) -> list[str]:
    files = [
        p for p in graph.files if p.endswith(CODE) or p.endswith((".md", ".rst", ".toml", ".json", ".yaml", ".yml"))
    ]
    if scope:
        files = [p for p in files if any(fnmatch.fnmatchcase(p, g) for g in scope)]
    return sorted(files)


def affinity(graph: CodeGraph, files: set[str]) -> dict[tuple[str, str], float]:
    """Symmetric coupling between files: 1 per import edge, plus co-change weight."""
    weights: dict[tuple[str, str], float] = defaultdict(float)
    for source, target in graph.edges():
        if source in files and target in files and source != target:
            weights[(min(source, target), max(source, target))] += 1.0
    for (a, b), w in graph.cochange.items():
        if a in files and b in files:
            weights[(a, b)] += w
    return dict(weights)


def units(graph: CodeGraph, files: list[str]) -> _UnionFind:
    uf = _UnionFind(files)
    chosen = set(files)
    sub = {f: {t for t in graph.imports.get(f, ()) if t in chosen} for f in files}
    for component in strongly_connected(files, sub):
        for other in component[1:]:
            uf.union(component[0], other)
    for (a, b), w in graph.cochange.items():
        if a in chosen and b in chosen and w >= STRONG_MIN:
            least = min(graph.changes.get(a, 1), graph.changes.get(b, 1))
            if w / max(least, 1) >= STRONG_SHARE:
                uf.union(a, b)
    return uf


def cluster(files: list[str], uf: _UnionFind, weights: dict[tuple[str, str], float], n: int) -> list[list[str]]:
    members: dict[str, list[str]] = defaultdict(list)
    for f in files:
        members[uf.find(f)].append(f)
    link: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (a, b), w in weights.items():
        ra, rb = uf.find(a), uf.find(b)
        if ra != rb:
            link[ra][rb] += w
            link[rb][ra] += w
    cap = math.ceil(len(files) / max(n, 1) * 1.5)
    heap: list[tuple[float, str, str]] = []

    def push(a: str, b: str) -> None:
        score = link[a][b] / math.sqrt(len(members[a]) * len(members[b]))
        heapq.heappush(heap, (-score, min(a, b), max(a, b)))

    for a in list(link):
        for b in link[a]:
            if a < b:
                push(a, b)
    alive = set(members)
    while len(alive) > n:
        merged = False
        while heap:
            _, a, b = heapq.heappop(heap)
            if a not in alive or b not in alive or b not in link[a]:
                continue
            if len(members[a]) + len(members[b]) > cap:
                continue
            _merge(a, b, members, link, alive)
            for other in list(link[a]):
                push(a, other)
            merged = True
            break
        if not merged:  # nothing connected fits: join the two smallest
            a, b = sorted(alive, key=lambda r: (len(members[r]), r))[:2]
            a, b = min(a, b), max(a, b)
            _merge(a, b, members, link, alive)
            for other in list(link[a]):
                push(a, other)
    return sorted((sorted(members[r]) for r in alive), key=lambda m: m[0])


def _merge(a: str, b: str, members: dict[str, list[str]], link: dict[str, dict[str, float]], alive: set[str]) -> None:
    members[a].extend(members.pop(b))
    alive.discard(b)
    for other, w in link.pop(b, {}).items():
        if other == a:
            continue
        link[a][other] += w
        link[other][a] += w
        link[other].pop(b, None)
    link[a].pop(b, None)


def _name(files: list[str], taken: set[str]) -> str:
    """The group's most common directory, then its first file: `click-core`, `tests-test-utils`."""
    dirs: dict[str, int] = defaultdict(int)
    for f in files:
        dirs[posixpath.dirname(f)] += 1
    top = max(sorted(dirs), key=lambda d: dirs[d])
    base = posixpath.basename(top) or "root"
    stem = posixpath.splitext(posixpath.basename(sorted(f for f in files if posixpath.dirname(f) == top)[0]))[0]

    def clean(text: str) -> str:
        return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:40] or "task"

    name = clean(base)
    if name in taken:
        name = clean(f"{base}-{stem}")
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    taken.add(candidate)
    return candidate


def assemble(graph: CodeGraph, groups: list[list[str]], weights: dict[tuple[str, str], float]) -> Decomposition:
    """Tasks from file groups: contracts, dependencies (cycles merged), and the report."""
    notes: list[str] = []
    rounds = 0
    while True:
        owner = {f: i for i, group in enumerate(groups) for f in group}
        deps: dict[int, set[int]] = defaultdict(set)
        for source, target in graph.edges():
            if source in owner and target in owner and owner[source] != owner[target]:
                deps[owner[source]].add(owner[target])
        task_edges = {str(k): {str(x) for x in v} for k, v in deps.items()}
        cycles = [c for c in strongly_connected([str(i) for i in range(len(groups))], task_edges) if len(c) > 1]
        if not cycles:
            break
        rounds += 1
        for cycle in cycles:
            indices = sorted(int(c) for c in cycle)
            files = sorted(f for i in indices for f in groups[i])
            if rounds <= 8:
                # Re-cut the groups along a topological order of their files' import graph
                # (providers first): chunks of such an order only import earlier chunks.
                chunks = _topological_chunks(graph, files, len(indices))
                notes.append(f"re-cut {len(indices)} groups that imported each other into {len(chunks)} layers")
            else:
                chunks = [files]
                notes.append(f"merged {len(indices)} groups that import each other in a cycle")
            for slot, i in enumerate(indices):
                groups[i] = chunks[slot] if slot < len(chunks) else []
        groups = [sorted(g) for g in groups if g]
    taken: set[str] = set()
    tasks = [PlannedTask(_name(group, taken), group) for group in groups]
    owner_task = {f: t for t in tasks for f in t.files}
    for source, target in sorted(graph.edges()):
        if source in owner_task and target in owner_task and owner_task[source] is not owner_task[target]:
            reader, provider = owner_task[source], owner_task[target]
            if target not in provider.contracts:
                provider.contracts.append(target)
            if target not in reader.reads:
                reader.reads.append(target)
            if provider.id not in reader.after:
                reader.after.append(provider.id)
    waves = _waves(tasks)
    total = sum(weights.values()) or 1.0
    crossing = sum(
        w for (a, b), w in weights.items() if a in owner_task and b in owner_task and owner_task[a] is not owner_task[b]
    )
    return Decomposition(
        tasks=tasks,
        width=max((len(w) for w in waves), default=0),
        critical_path=len(waves),
        coupling_risk=crossing / total,
        waves=waves,
        notes=notes,
    )


def _topological_chunks(graph: CodeGraph, files: list[str], k: int) -> list[list[str]]:
    """`files` in k chunks of about equal size along a topological order of their import
    cycles (each cycle kept whole), providers first."""
    chosen = set(files)
    sub = {f: {t for t in graph.imports.get(f, ()) if t in chosen and t != f} for f in files}
    components = strongly_connected(files, sub)  # Tarjan emits a component after those it reaches
    target = math.ceil(len(files) / k)
    chunks: list[list[str]] = [[]]
    for component in components:
        if len(chunks[-1]) >= target and len(chunks) < k:
            chunks.append([])
        chunks[-1].extend(component)
    return [sorted(c) for c in chunks if c]


def _waves(tasks: list[PlannedTask]) -> list[list[str]]:
    level: dict[str, int] = {}
    by_id = {t.id: t for t in tasks}

    def depth(task_id: str) -> int:
        if task_id not in level:
            stack = [task_id]
            while stack:
                current = stack[-1]
                pending = [d for d in by_id[current].after if d not in level]
                if pending:
                    stack.extend(pending)
                    continue
                level[current] = 1 + max((level[d] for d in by_id[current].after), default=-1)
                stack.pop()
        return level[task_id]

    waves: dict[int, list[str]] = defaultdict(list)
    for task in tasks:
        waves[depth(task.id)].append(task.id)
    return [sorted(waves[i]) for i in sorted(waves)]


def decompose(graph: CodeGraph, n: int, scope: Sequence[str] = ()) -> Decomposition:
    files = in_scope(graph, scope)
    if not files:
        raise ValueError(f"no files in scope {list(scope) or '(all)'}")
    chosen = set(files)
    weights = affinity(graph, chosen)
    groups = cluster(files, units(graph, files), weights, n)
    return assemble(graph, groups, weights)


def naive(graph: CodeGraph, n: int, scope: Sequence[str] = ()) -> list[list[str]]:
    """The baseline: whole directories, bin-packed by file count into n tasks (largest first)."""
    files = in_scope(graph, scope)
    by_dir: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_dir[posixpath.dirname(f)].append(f)
    bins: list[list[str]] = [[] for _ in range(n)]
    for _, group in sorted(by_dir.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        min(bins, key=len).extend(group)
    return [sorted(b) for b in bins if b]
