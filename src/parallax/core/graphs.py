"""Dependency graphs given as `node -> the nodes it depends on`: finding a cycle in one.

Pure and iterative (no recursion), so chains of any depth are fine; the answer is deterministic
(roots are tried in sorted order). Shared by the Plan IR, the task graph and the pattern compiler.
"""

from __future__ import annotations


def find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle in `node -> dependencies` as a path that returns to its start, or None.
    Iterative depth-first search, so deep chains do not hit the recursion limit."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        iterators = [iter(graph.get(root, ()))]
        while iterators:
            dep = next(iterators[-1], None)
            if dep is None:
                iterators.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if dep in on_path:
                return [*path[path.index(dep) :], dep]
            if dep in done or dep not in graph:
                continue
            path.append(dep)
            on_path.add(dep)
            iterators.append(iter(graph[dep]))
    return None
