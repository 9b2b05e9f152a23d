"""The resolver on the board: its events fold into the conflicted task's `resolution`, a task
being resolved is not offered for review, and the pattern compiles the resolver into the graph."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from parallax.core.errors import PlanError
from parallax.core.tasks import (
    TASK_CLAIMED,
    TASK_CONFLICTED,
    TASK_MERGED,
    TASK_REQUEUED,
    TASK_RESOLUTION_FAILED,
    TASK_RESOLVED,
    TASK_SUCCEEDED,
    TaskBoard,
    TaskGraphSpec,
)
from parallax.patterns.yaml_loader import compile_pattern

AGENT = {"kind": "command", "command": "true"}
FAR = 2**62


def spec(**extra: Any) -> TaskGraphSpec:
    tasks = [{"id": t, "prompt": f"do {t}", "writes": ["x.txt"], "agent": AGENT} for t in ("a", "b")]
    return TaskGraphSpec.model_validate({"tasks": tasks, "review": True, "resolver": AGENT, **extra})


def succeeded(board: TaskBoard, task: str) -> None:
    assert board.apply(TASK_CLAIMED, {"task": task, "worker": "w", "attempt": 1, "lease_until": FAR}, 1)
    assert board.apply(TASK_SUCCEEDED, {"task": task, "worker": "w", "attempt": 1, "commit": f"c-{task}"}, 2)


def test_a_resolution_folds_into_the_task_and_holds_its_review() -> None:
    board = TaskBoard.of(spec())
    succeeded(board, "a")
    succeeded(board, "b")
    assert board.apply(TASK_MERGED, {"task": "a", "commit": "m1"}, 3)
    conflicted = {"task": "b", "resolver": "resolve-b", "files": ["x.txt"], "against": ["a"], "base": "m1"}
    assert board.apply(TASK_CONFLICTED, conflicted, 4)
    resolution = board.tasks["b"].resolution
    assert resolution is not None and resolution.status == "resolving"
    assert board.awaiting_review() == []  # not before the resolution is there
    assert not board.apply(TASK_MERGED, {"task": "b", "commit": "m2"}, 5)
    assert board.apply(
        TASK_RESOLVED, {"task": "b", "resolver": "resolve-b", "commit": "r1", "usage": {"requests": 2}}, 6
    )
    assert (resolution.status, resolution.commit, resolution.against) == ("resolved", "r1", ("a",))
    assert board.awaiting_review() == ["b"]
    assert board.tasks["b"].usage == {"requests": 2}
    assert not board.apply(TASK_RESOLVED, {"task": "b", "commit": "r2"}, 7)  # once
    assert board.apply(TASK_MERGED, {"task": "b", "commit": "r1", "resolved_by": "resolve-b"}, 8)
    assert board.finished
    assert resolution.as_dict()["status"] == "resolved"


def test_a_failed_resolution_stands_until_the_task_runs_again() -> None:
    board = TaskBoard.of(spec())
    succeeded(board, "b")
    assert not board.apply(TASK_RESOLVED, {"task": "b", "commit": "r"}, 3)  # nothing being resolved
    assert board.apply(TASK_CONFLICTED, {"task": "b", "files": ["x.txt"]}, 3)
    assert board.apply(TASK_CONFLICTED, {"task": "b", "files": ["x.txt"]}, 4)  # a retry of an unfinished one
    assert board.apply(TASK_RESOLUTION_FAILED, {"task": "b", "error": "exit 1"}, 5)
    assert board.tasks["b"].resolution is not None and board.tasks["b"].resolution.error == "exit 1"
    assert board.awaiting_review() == ["b"]
    assert not board.apply(TASK_CONFLICTED, {"task": "b", "files": ["x.txt"]}, 6)
    assert board.apply(TASK_REQUEUED, {"task": "b", "reason": "conflicts"}, 7)
    assert board.tasks["b"].resolution is None


def test_resolver_ids_are_reserved_only_with_a_resolver() -> None:
    tasks = [{"id": "resolve-a", "writes": ["x"], "agent": AGENT}]
    TaskGraphSpec.model_validate({"tasks": tasks})
    with pytest.raises(ValidationError, match="task ids starting with 'resolve-'"):
        TaskGraphSpec.model_validate({"tasks": tasks, "resolver": AGENT})


def test_the_pattern_compiles_the_resolver_into_the_graph() -> None:
    doc = {"pattern": "tasks", "name": "r", "resolver": {"agent": {"kind": "command", "command": "fix"}},
           "tasks": {"a": {"writes": ["x"], "agent": AGENT}}}  # fmt: skip
    plan = compile_pattern(yaml.safe_dump(doc), "tasks.yaml")
    graph = TaskGraphSpec.model_validate(plan.steps[0].tasks)
    assert graph.resolver is not None and graph.resolver.command == "fix"
    without = {k: v for k, v in doc.items() if k != "resolver"}
    assert (
        TaskGraphSpec.model_validate(compile_pattern(yaml.safe_dump(without), "t.yaml").steps[0].tasks).resolver is None
    )
    with pytest.raises(PlanError, match="resolver"):
        compile_pattern(yaml.safe_dump({**doc, "resolver": {"agent": {"kind": "coder"}}}), "tasks.yaml")
