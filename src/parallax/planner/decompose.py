"""Decomposition: the files in scope, partitioned into tasks whose write sets are disjoint by
construction and whose coupling across task boundaries is low.

1. Units that must not be split: every import cycle, and files with strong co-change
   coupling (changed together in at least half the commits of the less-changed one, twice or
   more), joined with union-find.
2. With N >= 3 (`layered`): contracts first (one task, closed under imports), then parallel
   parts that import only contracts (the import graph's components once contracts and glue
   are out, packed by coupling and refined Kernighan-Lin style under a balance cap in lines),
   then the glue that imports several parts (one task, closed under importers). With N < 3
   (`cluster`): units are merged greedily along the strongest affinity (import edges plus
   co-change weight, normalised by size) until N clusters remain.
3. A file imported across a task boundary is a contract owned by its task; the importing
   tasks read it and depend on that task. Tasks that would depend on each other in a cycle are
   re-cut, so the task graph is a DAG.
4. The report: width (the most tasks in one wave), critical path (the longest dependency
   chain), speedup (lines written over the lines on the heaviest chain) and coupling risk (the
   share of all coupling weight that crosses task boundaries).
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

from parallax.planner.graph import CODE, DOCS, CodeGraph, line_count, strongly_connected

STRONG_SHARE = 0.5
STRONG_MIN = 2.0
LAYERED_MIN_TASKS = 3  # below this a contracts task and a glue task leave no room for parallel parts


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
    work: dict[str, int] = field(default_factory=dict[str, int])  # task -> lines in its write set

    @property
    def critical_work(self) -> int:
        """The lines on the heaviest dependency chain: what cannot be done in parallel."""
        return _critical_work(self.tasks, self.work)

    @property
    def speedup(self) -> float:
        """Expected speedup: total work over critical-path work (work = lines written)."""
        return sum(self.work.values()) / max(self.critical_work, 1)

    def report(self) -> dict[str, Any]:
        return {
            "tasks": len(self.tasks),
            "width": self.width,
            "critical_path": self.critical_path,
            "speedup": round(self.speedup, 3),
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
    files = [p for p in graph.files if p.endswith((*CODE, *DOCS))]
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


def assemble(
    graph: CodeGraph,
    groups: list[list[str]],
    weights: dict[tuple[str, str], float],
    stages: Sequence[int] | None = None,
) -> Decomposition:
    """Tasks from file groups: contracts, dependencies (cycles merged), and the report. With
    `stages` (one per group), every group also comes after each group of the stage before it."""
    notes: list[str] = []
    rounds = 0
    while True:
        owner = {f: i for i, group in enumerate(groups) for f in group}
        deps: dict[int, set[int]] = defaultdict(set)
        for source, target in graph.edges():
            if source in owner and target in owner and owner[source] != owner[target]:
                deps[owner[source]].add(owner[target])
        for i, j in _stage_edges(stages):
            deps[i].add(j)
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
        stages = None  # the groups were re-cut: the stages no longer describe them
    taken: set[str] = set()
    tasks = [PlannedTask(_name(group, taken), group) for group in groups]
    for i, j in sorted(_stage_edges(stages)):
        tasks[i].after.append(tasks[j].id)
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
        work={t.id: sum(line_count(graph.files[f]) for f in t.files) for t in tasks},
    )


def _stage_edges(stages: Sequence[int] | None) -> set[tuple[int, int]]:
    """(later, earlier) for every group and each group of the nearest earlier stage."""
    if not stages:
        return set()
    levels = sorted(set(stages))
    out: set[tuple[int, int]] = set()
    for i, stage in enumerate(stages):
        earlier = [s for s in levels if s < stage]
        if earlier:
            out.update((i, j) for j, other in enumerate(stages) if other == earlier[-1])
    return out


def _critical_work(tasks: list[PlannedTask], work: dict[str, int]) -> int:
    by_id = {t.id: t for t in tasks}
    done: dict[str, int] = {}
    for task in tasks:
        stack = [task.id]
        while stack:
            current = stack[-1]
            pending = [d for d in by_id[current].after if d not in done]
            if pending:
                stack.extend(pending)
                continue
            done[current] = work.get(current, 0) + max((done[d] for d in by_id[current].after), default=0)
            stack.pop()
    return max(done.values(), default=0)


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
    if n >= LAYERED_MIN_TASKS:
        return layered(graph, files, weights, n)
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


# Layered decomposition: contracts first, then parallel parts, then the glue that spans them.

MAX_SERIAL = 0.5  # the contracts and glue tasks together take at most this share of the work
CANDIDATES = 8  # blocks tried per step when cutting the largest component
HUB_SHARE = 0.25
REFINE_PASSES = 8
DIRECTORY_WEIGHT = 0.5
MAX_SIBLINGS = 400
BALANCE = 1.1  # a part may grow to this many times the average part while refining


@dataclass
class _Blocks:
    """Files joined into blocks that no plan may split (units, then every cycle of units, so
    the blocks' import graph is a DAG), with their imports, importers and work (lines)."""

    members: dict[str, list[str]]
    down: dict[str, set[str]]
    up: dict[str, set[str]]
    weight: dict[str, int]

    def total(self, blocks: Iterable[str]) -> int:
        return sum(self.weight[b] for b in blocks)


def _blocks(graph: CodeGraph, files: list[str], uf: _UnionFind) -> _Blocks:
    chosen = set(files)
    edges: dict[str, set[str]] = defaultdict(set)
    for f in files:
        for t in graph.imports.get(f, ()):
            if t in chosen and uf.find(f) != uf.find(t):
                edges[uf.find(f)].add(uf.find(t))
    for component in strongly_connected(sorted({uf.find(f) for f in files}), edges):
        for other in component[1:]:
            uf.union(component[0], other)
    members: dict[str, list[str]] = defaultdict(list)
    for f in files:
        members[uf.find(f)].append(f)
    down: dict[str, set[str]] = {b: set() for b in members}
    up: dict[str, set[str]] = {b: set() for b in members}
    for f in files:
        for t in graph.imports.get(f, ()):
            if t in chosen:
                a, b = uf.find(f), uf.find(t)
                if a != b:
                    down[a].add(b)
                    up[b].add(a)
    weight = {b: sum(line_count(graph.files[f]) for f in fs) for b, fs in members.items()}
    return _Blocks(dict(members), down, up, weight)


def _components(blocks: _Blocks, nodes: set[str]) -> list[list[str]]:
    """Weakly connected components of the import graph among `nodes`, each sorted, in order of
    their first block."""
    seen: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(nodes):
        if start in seen:
            continue
        seen.add(start)
        stack, component = [start], [start]
        while stack:
            node = stack.pop()
            for other in (*blocks.down[node], *blocks.up[node]):
                if other in nodes and other not in seen:
                    seen.add(other)
                    stack.append(other)
                    component.append(other)
        out.append(sorted(component))
    return out


def _closure(start: str, step: dict[str, set[str]], nodes: set[str]) -> set[str]:
    found, stack = {start}, [start]
    while stack:
        for other in step[stack.pop()]:
            if other in nodes and other not in found:
                found.add(other)
                stack.append(other)
    return found


def _makespan(sizes: list[int], k: int) -> int:
    """The largest bin when `sizes` are packed into k bins, largest first into the lightest."""
    bins = [0] * max(k, 1)
    for size in sorted(sizes, reverse=True):
        bins[bins.index(min(bins))] += size
    return max(bins)


def _tiers(blocks: _Blocks, n: int, hubs_first: bool = False) -> tuple[float, set[str], set[str]]:
    """Contracts C (closed under imports: what a contract imports is a contract) and glue T
    (closed under importers), chosen so the rest falls apart into components that pack into
    parallel parts. Greedy: cut the largest component at the block whose closure costs least
    plus leaves the smallest largest piece; keep the step whose estimated critical path
    (contracts + the heaviest part + glue) is shortest. With `hubs_first`, the blocks imported
    by at least HUB_SHARE of the others (and what they import) start as contracts: one greedy
    step sees no further than one cut, and a hub alone rarely splits anything."""
    total = blocks.total(blocks.weight) or 1
    contracts: set[str] = set()
    glue: set[str] = set()
    rest = set(blocks.weight)
    if hubs_first:
        for block in sorted(rest):
            if len(blocks.up[block]) >= HUB_SHARE * len(rest) and block not in contracts:
                contracts |= _closure(block, blocks.down, rest)
        rest -= contracts
    best: tuple[float, set[str], set[str]] | None = None
    while True:
        components = _components(blocks, rest)
        k = n - int(bool(contracts)) - int(bool(glue))
        sizes = [blocks.total(c) for c in components]
        if k >= 1:
            estimate = blocks.total(contracts) + blocks.total(glue) + _makespan(sizes, k)
            if best is None or estimate < best[0]:
                best = (estimate, set(contracts), set(glue))
        largest = max(range(len(components)), key=lambda i: (sizes[i], -i)) if components else -1
        if largest < 0 or sizes[largest] * max(k, 1) <= sum(sizes) or len(components[largest]) == 1:
            break
        if blocks.total(contracts) + blocks.total(glue) > MAX_SERIAL * total:
            break
        inside = set(components[largest])
        choices: list[tuple[int, int, str, str, set[str]]] = []
        by_importers = sorted(inside, key=lambda b: (-len(blocks.up[b] & inside), b))[:CANDIDATES]
        by_imports = sorted(inside, key=lambda b: (-len(blocks.down[b] & inside), b))[:CANDIDATES]
        for tier, picks, step in (("C", by_importers, blocks.down), ("T", by_imports, blocks.up)):
            for block in picks:
                closure = _closure(block, step, inside)
                if closure == inside:
                    continue
                left = _components(blocks, inside - closure)
                score = blocks.total(closure) + max(blocks.total(c) for c in left)
                choices.append((score, blocks.total(closure), tier, block, closure))
        if not choices:
            break
        _, _, tier, _, closure = min(choices, key=lambda c: c[:4])  # ties: the lighter cut
        (contracts if tier == "C" else glue).update(closure)
        rest -= closure
    assert best is not None
    return best


def _parts(blocks: _Blocks, components: list[list[str]], link: dict[tuple[str, str], float], k: int) -> list[list[str]]:
    """Components packed into k parts: merged along the strongest coupling (normalised by
    size) under a cap, then refined by moving one component at a time to the part it is most
    coupled to (a Kernighan–Lin style pass) while the parts stay balanced."""
    size = {c[0]: blocks.total(c) for c in components}
    whole = sum(size.values())
    cap = max(math.ceil(whole / max(k, 1) * BALANCE), max(size.values(), default=0))
    members: dict[str, list[str]] = {c[0]: [c[0]] for c in components}
    weight = dict(size)
    links: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (a, b), w in link.items():
        links[a][b] += w
        links[b][a] += w
    group_link: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for a, row in links.items():
        for b, w in row.items():
            group_link[a][b] += w
    heap: list[tuple[float, str, str]] = []

    def push(a: str, b: str) -> None:
        score = group_link[a][b] / math.sqrt(max(weight[a], 1) * max(weight[b], 1))
        heapq.heappush(heap, (-score, min(a, b), max(a, b)))

    for a in sorted(group_link):
        for b in sorted(group_link[a]):
            if a < b:
                push(a, b)
    alive = set(members)

    def merge(a: str, b: str) -> None:
        members[a].extend(members.pop(b))
        weight[a] += weight.pop(b)
        alive.discard(b)
        for other, w in group_link.pop(b, {}).items():
            if other == a:
                continue
            group_link[a][other] += w
            group_link[other][a] += w
            group_link[other].pop(b, None)
        group_link[a].pop(b, None)
        for other in sorted(group_link[a]):
            push(a, other)

    while len(alive) > k:
        merged = False
        while heap:
            _, a, b = heapq.heappop(heap)
            if a in alive and b in alive and b in group_link[a] and weight[a] + weight[b] <= cap:
                merge(a, b)
                merged = True
                break
        if not merged:  # nothing coupled fits: join the two lightest
            a, b = sorted(sorted(alive), key=lambda r: (weight[r], r))[:2]
            merge(min(a, b), max(a, b))
    part_of = {c: r for r in alive for c in members[r]}
    for _ in range(REFINE_PASSES):
        moved = False
        for c in sorted(part_of):
            home = part_of[c]
            if len(members[home]) == 1:
                continue
            pull: dict[str, float] = defaultdict(float)
            for other, w in links[c].items():
                if other in part_of:
                    pull[part_of[other]] += w
            target = max(sorted(pull), key=lambda r: pull[r], default=home)
            if target != home and pull[target] > pull[home] and weight[target] + size[c] <= cap:
                members[home].remove(c)
                members[target].append(c)
                weight[home] -= size[c]
                weight[target] += size[c]
                part_of[c] = target
                moved = True
        if not moved:
            break
    return [sorted(members[r]) for r in sorted(alive)]


def _siblings(files: list[str]) -> dict[tuple[str, str], float]:
    """A weak prior for files no history or import ties: files of one directory tend to change
    together (CI workflows, docs chapters). Each file's ties to its siblings add up to
    DIRECTORY_WEIGHT."""
    by_dir: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_dir[posixpath.dirname(f)].append(f)
    out: dict[tuple[str, str], float] = {}
    for group in by_dir.values():
        if 1 < len(group) <= MAX_SIBLINGS:
            w = DIRECTORY_WEIGHT / (len(group) - 1)
            for i, a in enumerate(group):
                for b in group[i + 1 :]:
                    out[(a, b)] = w
    return out


def layered(graph: CodeGraph, files: list[str], weights: dict[tuple[str, str], float], n: int) -> Decomposition:
    """Contracts first (one task), then up to n-2 parallel parts that import only contracts,
    then the glue that imports several parts (one task); see `_tiers` and `_parts`."""
    uf = units(graph, files)
    blocks = _blocks(graph, files, uf)
    _, contracts, glue = min(_tiers(blocks, n), _tiers(blocks, n, hubs_first=True), key=lambda t: t[0])
    rest = set(blocks.weight) - contracts - glue
    components = _components(blocks, rest)
    k = max(1, n - int(bool(contracts)) - int(bool(glue)))
    link: dict[tuple[str, str], float] = defaultdict(float)
    component_of = {b: c[0] for c in components for b in c}
    for (a, b), w in [*weights.items(), *_siblings(files).items()]:
        ca, cb = component_of.get(uf.find(a)), component_of.get(uf.find(b))
        if ca is not None and cb is not None and ca != cb:
            link[(min(ca, cb), max(ca, cb))] += w
    by_first = {c[0]: c for c in components}
    parts = [[b for c in part for b in by_first[c]] for part in _parts(blocks, components, dict(link), k)]

    def files_of(group: Iterable[str]) -> list[str]:
        return sorted(f for b in group for f in blocks.members[b])

    groups: list[list[str]] = []
    stages: list[int] = []
    for stage, tier in ((0, [contracts]), (1, parts), (2, [glue])):
        for group in tier:
            if group:
                groups.append(files_of(group))
                stages.append(stage)
    return assemble(graph, groups, weights, stages)
