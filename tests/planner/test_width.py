"""The planner keeps width on tightly coupled code: a synthetic repository graph where one hub
module is imported by everything, with clusters around it and glue importing every cluster."""

from __future__ import annotations

import random
from typing import Any, TypeVar

import pytest

from parallax.planner.decompose import Decomposition, assemble, decompose, in_scope
from parallax.planner.graph import CodeGraph, line_count

CLUSTERS = 6
PER_CLUSTER = 4
K = TypeVar("K")
V = TypeVar("V")


def shuffled(d: dict[K, V], rng: random.Random | None) -> dict[K, V]:
    items = list(d.items())
    if rng is not None:
        rng.shuffle(items)
    return dict(items)


def coupled_graph(seed: int | None = None) -> CodeGraph:
    """`pkg/types.py` (imported by every module and test) and `pkg/config.py` (imports types);
    clusters `pkg/cN/m*.py` whose modules import each other in a chain and the hub, changing
    together; a test per cluster; `pkg/app.py` importing one module of every cluster; docs.
    With `seed`, every mapping is built in a shuffled order (the plan must not depend on it)."""
    files: dict[str, dict[str, Any]] = {}
    imports: dict[str, set[str]] = {}
    cochange: dict[tuple[str, str], float] = {}
    changes: dict[str, int] = {}

    def add(path: str, lines: int, deps: list[str], test: bool = False) -> None:
        files[path] = {"lang": "python", "size": lines * 30, "test": test, "lines": lines}
        if deps:
            imports[path] = set(deps)

    add("pkg/types.py", 400, [])
    add("pkg/config.py", 100, ["pkg/types.py"])
    for c in range(CLUSTERS):
        names = [f"pkg/c{c}/m{i}.py" for i in range(PER_CLUSTER)]
        for i, name in enumerate(names):
            add(name, 150 + 10 * i, ["pkg/types.py", "pkg/config.py", *names[i + 1 : i + 2]])
        add(f"tests/test_c{c}.py", 200, ["pkg/types.py", names[0]], test=True)
        group = sorted([*names, f"tests/test_c{c}.py", f"docs/c{c}.md"])
        files[f"docs/c{c}.md"] = {"lang": "md", "size": 900, "test": False, "lines": 30}
        for i, a in enumerate(group):
            changes[a] = 6
            for b in group[i + 1 :]:
                cochange[(a, b)] = 1.5  # changed together, not so strongly that they are one unit
    add("pkg/app.py", 120, ["pkg/types.py", *(f"pkg/c{c}/m0.py" for c in range(CLUSTERS))])
    cochange[("pkg/config.py", "pkg/types.py")] = 3.0
    rng = random.Random(seed) if seed is not None else None
    graph = CodeGraph("synthetic", files=shuffled(files, rng), cochange=shuffled(cochange, rng), changes=changes)
    for k, v in shuffled(imports, rng).items():
        graph.imports[k] = set(shuffled(dict.fromkeys(sorted(v)), rng))
    return graph


def ancestors(plan: Decomposition, task_id: str) -> set[str]:
    by_id = {t.id: t for t in plan.tasks}
    seen: set[str] = set()
    stack = list(by_id[task_id].after)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(by_id[current].after)
    return seen


def test_a_hub_imported_by_everything_does_not_make_a_chain() -> None:
    graph = coupled_graph()
    plan = decompose(graph, 8)
    assert len(plan.tasks) <= 8
    assert plan.width >= 4
    # disjoint write sets that cover every file in scope
    written = [f for t in plan.tasks for f in t.files]
    assert len(written) == len(set(written))
    assert sorted(written) == in_scope(graph)
    # the hub and what it needs are contracts done first: every other task comes after them
    owner = {f: t.id for t in plan.tasks for f in t.files}
    first = owner["pkg/types.py"]
    assert owner["pkg/config.py"] == first
    assert plan.waves[0] == [first]
    assert all(first in ancestors(plan, t.id) for t in plan.tasks if t.id != first)
    # a cluster (modules, test, docs: they change together) is never split across tasks
    for c in range(CLUSTERS):
        assert len({owner[f] for f in owner if f"c{c}/" in f or f.endswith((f"_c{c}.py", f"/c{c}.md"))}) == 1
    # the glue importing every cluster runs after them, alone in the last wave
    assert plan.waves[-1] == [owner["pkg/app.py"]]
    # every import across tasks is a contract of its provider and a dependency of its reader
    by_id = {t.id: t for t in plan.tasks}
    for source, target in graph.edges():
        if owner[source] != owner[target]:
            assert target in by_id[owner[target]].contracts
            assert owner[target] in ancestors(plan, owner[source])
    # the expected speedup: total lines over the lines of the heaviest chain
    total = sum(line_count(info) for info in graph.files.values())
    assert sum(plan.work.values()) == total
    assert plan.speedup == pytest.approx(total / plan.critical_work)
    assert plan.speedup > 2.0
    assert plan.report()["speedup"] == round(plan.speedup, 3)


@pytest.mark.parametrize("n", [3, 4, 6, 8, 12])
def test_width_grows_with_the_tasks_asked_for(n: int) -> None:
    plan = decompose(coupled_graph(), n)
    assert len(plan.tasks) <= n
    assert plan.width >= min(n - 2, CLUSTERS)  # contracts and glue take two of the n tasks
    assert sorted(f for t in plan.tasks for f in t.files) == in_scope(coupled_graph())


def test_the_plan_is_deterministic() -> None:
    def shape(plan: Decomposition) -> list[tuple[str, list[str], list[str], list[str]]]:
        return [(t.id, t.files, sorted(t.contracts), sorted(t.after)) for t in plan.tasks]

    expected = shape(decompose(coupled_graph(), 8))
    for seed in range(5):
        assert shape(decompose(coupled_graph(seed), 8)) == expected


def test_stages_order_groups_and_speedup_follows_the_heaviest_chain() -> None:
    graph = CodeGraph("s", files={f: {"lang": "md", "size": 0, "test": False, "lines": n}
                                  for f, n in {"a.md": 10, "b.md": 30, "c.md": 20, "d.md": 5}.items()})  # fmt: skip
    plan = assemble(graph, [["a.md"], ["b.md"], ["c.md"], ["d.md"]], {}, stages=[0, 1, 1, 2])
    assert [len(w) for w in plan.waves] == [1, 2, 1]
    assert plan.width == 2 and plan.critical_path == 3
    assert plan.critical_work == 10 + 30 + 5
    assert plan.speedup == pytest.approx(65 / 45)
