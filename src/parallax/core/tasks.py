"""The task graph of parallel coding: tasks, their legal transitions, claims with leases, and
which tasks may run together. Pure: the board is a fold of `task.*` events, and every decision
(`pick`) is a function of the board and the time it is given.

States: pending (waiting on dependencies), ready, claimed (a worker holds a lease), running,
succeeded, failed, blocked (a dependency failed or was cancelled), merged (integrated),
cancelled. `pending`, `ready` and `blocked` are derived from the dependencies; the rest are
recorded. A claim is a conditional append at the tail the claimer folded, so of two workers
deciding on the same board exactly one claim lands; the loser re-reads and decides again.

Invariants the fold keeps:
- a task has at most one holder with a live lease: a claim is accepted only when the task is
  claimable at the claim's own timestamp (nobody holds a live lease on it);
- events from a worker that no longer holds the task (its lease expired and someone else
  claimed it) are ignored, so a stale worker can never finish or renew someone else's claim;
- two tasks whose write sets may touch the same path never hold live leases at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from parallax.core.agent_spec import AgentSpec
from parallax.core.graphs import find_cycle

TaskStatus = Literal["pending", "ready", "claimed", "running", "succeeded", "failed", "blocked", "merged", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"failed", "blocked", "merged", "cancelled"})
DONE_FOR_DEPENDENTS: frozenset[str] = frozenset({"succeeded", "merged"})

# Events on the run's control stream (`task` names the task in the data).
TASK_CLAIMED = "task.claimed"
TASK_HEARTBEAT = "task.heartbeat"
TASK_STARTED = "task.started"
TASK_SUCCEEDED = "task.succeeded"
TASK_FAILED = "task.failed"
TASK_RELEASED = "task.released"
TASK_REQUEUED = "task.requeued"  # a contract it reads changed, or a reviewer sent it back
TASK_MERGED = "task.merged"
TASK_CANCELLED = "task.cancelled"
TASK_PROGRESS = "task.progress"  # the files a running task has changed so far (its peers read it)
# A succeeded task's merge into the integration branch conflicted and the graph's resolver took
# it on (`task.conflicted`), then proposed a verified resolution (`task.resolved`) or could not
# (`task.resolution_failed`).
TASK_CONFLICTED = "task.conflicted"
TASK_RESOLVED = "task.resolved"
TASK_RESOLUTION_FAILED = "task.resolution_failed"
TASK_EVENTS = frozenset(
    {TASK_CLAIMED, TASK_HEARTBEAT, TASK_STARTED, TASK_SUCCEEDED, TASK_FAILED, TASK_RELEASED, TASK_REQUEUED,
     TASK_MERGED, TASK_CANCELLED, TASK_PROGRESS, TASK_CONFLICTED, TASK_RESOLVED, TASK_RESOLUTION_FAILED}
)  # fmt: skip
RESOLVER_PREFIX = "resolve-"  # task B's resolver works as `resolve-B`, on branch parallax/<run>/resolve-B


class TaskSpec(BaseModel):
    """One unit of coding work. `writes` are globs relative to the repository root that bound
    what the task may change; `reads` and `peers` what else it may look at; `contracts` are
    files this task owns (the only task allowed to change them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")]
    prompt: str = ""
    after: tuple[str, ...] = ()
    writes: tuple[str, ...] = Field(min_length=1)
    reads: tuple[str, ...] = ()
    contracts: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    verify: str | None = None
    agent: AgentSpec
    network: bool = False
    sandbox: bool = False
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 2


class TaskGraphSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    lease_s: Annotated[float, Field(gt=0)] = 30.0
    workers: Annotated[int, Field(ge=1, le=256)] = 4
    verify: str | None = None  # run on the integration branch after each merge
    review: bool = False  # finished tasks wait for a person (`parallax review`) before merging
    # Resolves a git conflict met while merging a task into the integration branch (None: the
    # conflict is only recorded).
    resolver: AgentSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskGraphSpec:
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task ids must be unique: {sorted({i for i in ids if ids.count(i) > 1})}")
        taken = [i for i in ids if i.startswith(RESOLVER_PREFIX)] if self.resolver is not None else []
        if taken:
            raise ValueError(f"with a resolver, task ids starting with {RESOLVER_PREFIX!r} are its: rename {taken}")
        known = set(ids)
        for task in self.tasks:
            for ref, kind in [*((d, "depends on") for d in task.after), *((p, "peers") for p in task.peers)]:
                if ref not in known:
                    raise ValueError(f"task {task.id!r} {kind} unknown task {ref!r}")
        cycle = find_cycle({t.id: t.after for t in self.tasks})
        if cycle:
            raise ValueError(f"the tasks form a cycle: {' -> '.join(cycle)}")
        owners: dict[str, str] = {}
        for task in self.tasks:
            for path in task.contracts:
                if path in owners:
                    raise ValueError(f"contract {path!r} has two owners: {owners[path]} and {task.id}")
                owners[path] = task.id
                if not any(fnmatch.fnmatchcase(path, g) for g in task.writes):
                    raise ValueError(f"task {task.id!r} owns contract {path!r} but its write set does not cover it")
        for task in self.tasks:
            for path, owner in owners.items():
                if owner != task.id and any(fnmatch.fnmatchcase(path, g) for g in task.writes):
                    raise ValueError(
                        f"task {task.id!r} may write {path!r}, a contract owned by {owner!r}: narrow its write set"
                    )
        return self

    _index: dict[str, TaskSpec] = PrivateAttr(default_factory=dict)
    _dependents: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        self._index = {t.id: t for t in self.tasks}
        self._dependents = {t.id: [] for t in self.tasks}
        for task in self.tasks:
            for dep in task.after:
                self._dependents.setdefault(dep, []).append(task.id)

    def task(self, task_id: str) -> TaskSpec:
        return self._index[task_id]

    def dependents(self, task_id: str) -> list[str]:
        return self._dependents[task_id]


# Write sets


def _static_prefix(glob: str) -> str:
    for i, ch in enumerate(glob):
        if ch in "*?[":
            return glob[:i]
    return glob


def globs_may_overlap(a: str, b: str, files: Iterable[str] = ()) -> bool:
    """Whether some path could match both globs: an existing file matching both, one glob
    matching the other literally, or (conservatively) wildcards below a shared directory."""
    if a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a):
        return True
    if any(fnmatch.fnmatchcase(f, a) and fnmatch.fnmatchcase(f, b) for f in files):
        return True
    pa, pb = _static_prefix(a), _static_prefix(b)
    wild_a, wild_b = pa != a, pb != b
    if not (wild_a or wild_b):
        return False  # two different literal paths
    # A wildcard can stand for anything below its prefix: overlap unless the literal parts
    # already disagree before either wildcard starts.
    shorter = min(len(pa), len(pb))
    return pa[:shorter] == pb[:shorter]


def write_sets_overlap(a: Sequence[str], b: Sequence[str], files: Iterable[str] = ()) -> bool:
    files = list(files)
    return any(globs_may_overlap(x, y, files) for x in a for y in b)


def in_write_set(path: str, writes: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in writes)


# The board


USAGE_KEYS = ("requests", "input_tokens", "output_tokens", "cost_usd")


def add_usage(total: dict[str, float], usage: Any) -> None:
    """Add an attempt's usage (requests, tokens, cost) to `total`, ignoring anything else."""
    if not isinstance(usage, dict):
        return
    for key in USAGE_KEYS:
        value = usage.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


@dataclass
class Resolution:
    """The resolver's work on one task's conflicted merge: `resolving`, then `resolved` (a
    verified commit on its own branch, merged or reviewed in the task's place) or `failed`
    (the conflict stands)."""

    resolver: str  # resolve-<task>
    files: tuple[str, ...]  # the conflicted files: the resolver's write set
    against: tuple[str, ...] = ()  # the integrated tasks that changed them
    base: str | None = None  # the integration head the resolution starts from
    branch: str | None = None
    status: Literal["resolving", "resolved", "failed"] = "resolving"
    commit: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolver": self.resolver,
            "files": list(self.files),
            "against": list(self.against),
            "base": self.base,
            "branch": self.branch,
            "status": self.status,
            "commit": self.commit,
            "error": self.error,
        }


@dataclass
class TaskState:
    id: str
    status: TaskStatus = "pending"
    holder: str | None = None
    lease_until: int = 0  # ms since the epoch
    attempt: int = 0
    commit: str | None = None
    changed: tuple[str, ...] = ()
    error: str | None = None
    base: str | None = None
    feedback: str | None = None  # why it was last sent back (a reviewer's note, a changed contract)
    claimed_at: int | None = None
    finished_at: int | None = None
    history: list[str] = field(default_factory=list[str])
    usage: dict[str, float] = field(default_factory=dict[str, float])  # every attempt's model usage, summed
    changed_so_far: tuple[str, ...] = ()  # while it runs: the files it has changed (task.progress)
    resolution: Resolution | None = None  # its merge conflicted and the graph's resolver took it on

    @property
    def resolving(self) -> bool:
        return self.resolution is not None and self.resolution.status == "resolving"

    def live(self, now_ms: int) -> bool:
        return self.status in ("claimed", "running") and self.lease_until > now_ms


@dataclass
class TaskBoard:
    spec: TaskGraphSpec
    tasks: dict[str, TaskState] = field(default_factory=dict[str, TaskState])
    ignored: int = 0  # events refused by the fold (stale workers, illegal transitions)

    @classmethod
    def of(cls, spec: TaskGraphSpec) -> TaskBoard:
        board = cls(spec)
        board.tasks = {t.id: TaskState(t.id) for t in spec.tasks}
        board._derive()
        return board

    def _derive(self, changed: str | None = None) -> None:
        """pending / ready / blocked follow from the dependencies: re-derive the tasks below
        `changed` (all of them when None), in dependency order."""
        queue = [t.id for t in self.spec.tasks] if changed is None else list(self.spec.dependents(changed))
        while queue:
            task_id = queue.pop(0)
            state = self.tasks[task_id]
            if state.status not in ("pending", "ready", "blocked"):
                continue
            deps = [self.tasks[d].status for d in self.spec.task(task_id).after]
            if any(s in ("failed", "blocked", "cancelled") for s in deps):
                new: TaskStatus = "blocked"
            elif all(s in DONE_FOR_DEPENDENTS for s in deps):
                new = "ready"
            else:
                new = "pending"
            if new != state.status:
                state.status = new
                queue.extend(self.spec.dependents(task_id))

    def claimable(self, task_id: str, now_ms: int) -> bool:
        state = self.tasks[task_id]
        if state.status == "ready":
            return True
        return state.status in ("claimed", "running") and state.lease_until <= now_ms  # lease expired

    def running_writes(self, now_ms: int, but: str | None = None) -> list[TaskSpec]:
        return [self.spec.task(t.id) for t in self.tasks.values() if t.id != but and t.live(now_ms)]

    def conflicts_with_running(self, task_id: str, now_ms: int, files: Sequence[str] = ()) -> str | None:
        spec = self.spec.task(task_id)
        for other in self.running_writes(now_ms, but=task_id):
            if write_sets_overlap(spec.writes, other.writes, files):
                return other.id
        return None

    def pick(self, now_ms: int, files: Sequence[str] = ()) -> str | None:
        """The first claimable task (in declaration order) whose write set cannot touch any
        path a task with a live lease may write."""
        for spec in self.spec.tasks:
            if self.claimable(spec.id, now_ms) and self.conflicts_with_running(spec.id, now_ms, files) is None:
                return spec.id
        return None

    @property
    def finished(self) -> bool:
        """Nothing left to run: every task succeeded or ended (with a review queue, succeeded
        tasks still wait for a person, and a rejection makes them ready again)."""
        done = TERMINAL if self.spec.review else TERMINAL | {"succeeded"}
        return all(t.status in done for t in self.tasks.values())

    def awaiting_review(self) -> list[str]:
        """Finished tasks a person has not decided on yet, in declaration order (a task whose
        conflict the resolver is working on waits for the resolution first)."""
        return [
            t.id for t in self.spec.tasks if self.tasks[t.id].status == "succeeded" and not self.tasks[t.id].resolving
        ]

    def apply(self, kind: str, data: dict[str, Any], timestamp: int) -> bool:
        """Fold one task event; returns False (and counts it) when the event is refused."""
        task_id = data.get("task")
        if task_id not in self.tasks:
            self.ignored += 1
            return False
        state = self.tasks[task_id]
        worker = data.get("worker")
        holder_ok = worker is not None and worker == state.holder and int(data.get("attempt", -1)) == state.attempt
        ok = True
        if kind == TASK_CLAIMED:
            ok = self.claimable(task_id, timestamp) and self.conflicts_with_running(task_id, timestamp) is None
            if ok:
                state.status = "claimed"
                state.holder = worker
                state.attempt += 1
                state.lease_until = int(data["lease_until"])
                state.claimed_at = timestamp
                state.error = None
        elif kind == TASK_HEARTBEAT:
            ok = holder_ok and state.status in ("claimed", "running") and state.lease_until > timestamp
            if ok:
                state.lease_until = max(state.lease_until, int(data["lease_until"]))
        elif kind == TASK_STARTED:
            ok = holder_ok and state.status == "claimed" and state.lease_until > timestamp
            if ok:
                state.status = "running"
                state.base = data.get("base")
                state.changed_so_far = ()
        elif kind == TASK_PROGRESS:
            ok = holder_ok and state.status == "running" and state.lease_until > timestamp
            if ok:
                state.changed_so_far = tuple(str(p) for p in data.get("changed", ()))
        elif kind in (TASK_SUCCEEDED, TASK_FAILED, TASK_RELEASED):
            ok = holder_ok and state.status in ("claimed", "running") and state.lease_until > timestamp
            if ok:
                state.finished_at = timestamp
                state.lease_until = 0
                add_usage(state.usage, data.get("usage"))
                if kind == TASK_SUCCEEDED:
                    state.status = "succeeded"
                    state.commit = data.get("commit")
                    state.changed = tuple(data.get("changed", ()))
                elif kind == TASK_FAILED:
                    final = bool(data.get("final", True)) or state.attempt >= self.spec.task(task_id).max_attempts
                    state.status = "failed" if final else "ready"
                    state.error = data.get("error")
                else:
                    state.status = "ready"
                state.holder = None if state.status != "succeeded" else state.holder
        elif kind == TASK_REQUEUED:
            ok = state.status in ("succeeded", "failed", "claimed", "running")
            if ok:
                state.status = "ready"
                state.holder = None
                state.lease_until = 0
                state.commit = None
                state.error = None
                state.feedback = data.get("reason")
                state.resolution = None  # its next commit is merged afresh
        elif kind == TASK_MERGED:
            ok = state.status == "succeeded" and not state.resolving
            if ok:
                state.status = "merged"
                state.commit = data.get("commit", state.commit)
        elif kind == TASK_CONFLICTED:
            # A new resolution, or another try at one that never finished (the process running
            # it stopped); a failed one stands until the task itself runs again.
            ok = state.status == "succeeded" and (state.resolution is None or state.resolving)
            if ok:
                state.resolution = Resolution(
                    resolver=str(data.get("resolver") or f"{RESOLVER_PREFIX}{task_id}"),
                    files=tuple(str(f) for f in data.get("files", ())),
                    against=tuple(str(a) for a in data.get("against", ())),
                    base=data.get("base"),
                    branch=data.get("branch"),
                )
        elif kind in (TASK_RESOLVED, TASK_RESOLUTION_FAILED):
            resolution = state.resolution
            ok = state.status == "succeeded" and resolution is not None and resolution.status == "resolving"
            if ok and resolution is not None:
                add_usage(state.usage, data.get("usage"))
                if kind == TASK_RESOLVED:
                    resolution.status = "resolved"
                    resolution.commit = data.get("commit")
                else:
                    resolution.status = "failed"
                    resolution.error = data.get("error")
        elif kind == TASK_CANCELLED:
            ok = state.status not in TERMINAL
            if ok:
                state.status = "cancelled"
                state.lease_until = 0
        else:
            ok = False
        if ok:
            state.history.append(kind)
            self._derive(task_id)
        else:
            self.ignored += 1
        return ok
