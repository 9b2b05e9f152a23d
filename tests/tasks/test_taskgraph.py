"""The task graph as a state machine (hypothesis stateful): whatever workers do, in any order
and at any time, the board never lets two live leases hold one task or two overlapping write
sets, never moves a task along an illegal transition, and derives pending/ready/blocked from the
dependencies. Plus the spec's own validation and the write-set overlap rules."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydantic import ValidationError

from parallax.core.plan import AgentSpec
from parallax.core.tasks import (
    TASK_CANCELLED,
    TASK_CLAIMED,
    TASK_FAILED,
    TASK_HEARTBEAT,
    TASK_MERGED,
    TASK_RELEASED,
    TASK_REQUEUED,
    TASK_STARTED,
    TASK_SUCCEEDED,
    TaskBoard,
    TaskGraphSpec,
    TaskSpec,
    globs_may_overlap,
    write_sets_overlap,
)

AGENT = AgentSpec(kind="command", command="true")
LEGAL = {
    ("pending", "ready"), ("pending", "blocked"), ("ready", "pending"), ("ready", "blocked"),
    ("ready", "claimed"), ("claimed", "claimed"), ("running", "claimed"), ("claimed", "running"),
    ("claimed", "ready"), ("running", "ready"), ("claimed", "succeeded"), ("running", "succeeded"),
    ("claimed", "failed"), ("running", "failed"), ("succeeded", "merged"), ("succeeded", "ready"),
    ("failed", "ready"), ("pending", "cancelled"), ("ready", "cancelled"), ("claimed", "cancelled"),
    ("running", "cancelled"), ("succeeded", "cancelled"), ("blocked", "pending"), ("blocked", "ready"),
    ("pending", "pending"),
}  # fmt: skip

SPEC = TaskGraphSpec(
    tasks=(
        TaskSpec(id="api", writes=("api/openapi.yaml",), contracts=("api/openapi.yaml",), agent=AGENT),
        TaskSpec(id="server", writes=("server/*.py",), after=("api",), agent=AGENT),
        TaskSpec(id="client", writes=("client/*.ts",), after=("api",), agent=AGENT),
        TaskSpec(id="models", writes=("server/models.py",), agent=AGENT),
        TaskSpec(id="docs", writes=("docs/**",), after=("server", "client"), agent=AGENT),
        TaskSpec(id="readme", writes=("README.md",), agent=AGENT),
    ),
    lease_s=1.0,
)
TASKS = [t.id for t in SPEC.tasks]
WORKERS = ["w1", "w2", "w3"]


class Board(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.board = TaskBoard.of(SPEC)
        self.now = 1_000_000
        self.previous = {t: s.status for t, s in self.board.tasks.items()}

    def _apply(self, kind: str, **data: object) -> None:
        self.now += 1
        self.board.apply(kind, dict(data), self.now)
        for task, state in self.board.tasks.items():
            before = self.previous[task]
            assert before == state.status or (before, state.status) in LEGAL, f"{task}: {before} -> {state.status}"
            self.previous[task] = state.status

    @rule(worker=st.sampled_from(WORKERS), task=st.sampled_from(TASKS), lease=st.integers(1, 3000))
    def claim(self, worker: str, task: str, lease: int) -> None:
        attempt = self.board.tasks[task].attempt + 1
        self._apply(TASK_CLAIMED, task=task, worker=worker, attempt=attempt, lease_until=self.now + lease)

    @rule(worker=st.sampled_from(WORKERS), task=st.sampled_from(TASKS),
          kind=st.sampled_from([TASK_HEARTBEAT, TASK_STARTED, TASK_SUCCEEDED, TASK_FAILED, TASK_RELEASED]),
          stale=st.booleans(), final=st.booleans())  # fmt: skip
    def report(self, worker: str, task: str, kind: str, stale: bool, final: bool) -> None:
        attempt = self.board.tasks[task].attempt - (1 if stale else 0)
        self._apply(kind, task=task, worker=worker, attempt=attempt, lease_until=self.now + 500, final=final)

    @rule(task=st.sampled_from(TASKS), kind=st.sampled_from([TASK_REQUEUED, TASK_MERGED, TASK_CANCELLED]))
    def other(self, task: str, kind: str) -> None:
        self._apply(kind, task=task, reason="test")

    @rule(ms=st.integers(1, 2500))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @invariant()
    def one_live_holder_and_no_overlapping_writes(self) -> None:
        live = [t for t in self.board.tasks.values() if t.live(self.now)]
        for a in live:
            for b in live:
                if a.id < b.id:
                    assert not write_sets_overlap(SPEC.task(a.id).writes, SPEC.task(b.id).writes), (a.id, b.id)

    @invariant()
    def readiness_follows_dependencies(self) -> None:
        for spec in SPEC.tasks:
            state = self.board.tasks[spec.id]
            deps = [self.board.tasks[d].status for d in spec.after]
            if state.status == "ready":
                assert all(d in ("succeeded", "merged") for d in deps)
            if state.status == "blocked":
                assert any(d in ("failed", "blocked", "cancelled") for d in deps)
            if state.status in ("claimed", "running"):
                assert state.holder is not None


TestBoard = Board.TestCase
TestBoard.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_stale_worker_cannot_finish_a_task_taken_over() -> None:
    board = TaskBoard.of(SPEC)
    board.apply(TASK_CLAIMED, {"task": "readme", "worker": "w1", "attempt": 1, "lease_until": 1_000}, 0)
    assert not board.apply(TASK_CLAIMED, {"task": "readme", "worker": "w2", "attempt": 2, "lease_until": 5_000}, 500)
    assert board.apply(TASK_CLAIMED, {"task": "readme", "worker": "w2", "attempt": 2, "lease_until": 5_000}, 1_500)
    assert not board.apply(TASK_SUCCEEDED, {"task": "readme", "worker": "w1", "attempt": 1}, 1_600)
    assert board.apply(TASK_SUCCEEDED, {"task": "readme", "worker": "w2", "attempt": 2}, 1_700)
    assert board.tasks["readme"].status == "succeeded"


def test_pick_skips_tasks_whose_writes_overlap_a_running_one() -> None:
    board = TaskBoard.of(SPEC)
    assert board.pick(0) == "api"
    board.apply(TASK_CLAIMED, {"task": "models", "worker": "w1", "attempt": 1, "lease_until": 10_000}, 0)
    board.apply(TASK_CLAIMED, {"task": "api", "worker": "w2", "attempt": 1, "lease_until": 10_000}, 0)
    board.apply(TASK_SUCCEEDED, {"task": "api", "worker": "w2", "attempt": 1}, 1)
    assert board.pick(2) == "client"  # server (server/*.py) overlaps models (server/models.py), running
    assert board.claimable("models", 20_000)  # the lease ran out: models may be claimed again
    assert board.pick(20_000) == "server"  # and nothing live overlaps server any more


@pytest.mark.parametrize(
    ("a", "b", "files", "overlap"),
    [
        ("src/a.py", "src/a.py", [], True),
        ("src/a.py", "src/b.py", [], False),
        ("src/*.py", "src/a.py", [], True),
        ("src/**", "src/deep/x.py", [], True),
        ("src/*.py", "tests/*.py", [], False),
        ("src/a*.py", "src/b*.py", [], False),  # the literal parts disagree before any wildcard
        ("src/a*.py", "src/*b.py", ["src/ab.py"], True),
        ("docs/*.md", "docs/api/*.yaml", [], True),  # conservative below a shared directory
    ],
)
def test_glob_overlap(a: str, b: str, files: list[str], overlap: bool) -> None:
    assert globs_may_overlap(a, b, files) is overlap
    assert globs_may_overlap(b, a, files) is overlap


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="unknown task 'nope'"):
        TaskGraphSpec(tasks=(TaskSpec(id="a", writes=("x",), after=("nope",), agent=AGENT),))
    with pytest.raises(ValidationError, match="cycle"):
        TaskGraphSpec(
            tasks=(
                TaskSpec(id="a", writes=("x",), after=("b",), agent=AGENT),
                TaskSpec(id="b", writes=("y",), after=("a",), agent=AGENT),
            )
        )
    with pytest.raises(ValidationError, match="a contract owned by 'api'"):
        TaskGraphSpec(
            tasks=(
                TaskSpec(id="api", writes=("api/*",), contracts=("api/spec.yaml",), agent=AGENT),
                TaskSpec(id="b", writes=("api/spec.yaml",), agent=AGENT),
            )
        )
    with pytest.raises(ValidationError, match="does not cover it"):
        TaskGraphSpec(tasks=(TaskSpec(id="a", writes=("src/*",), contracts=("api/x",), agent=AGENT),))
