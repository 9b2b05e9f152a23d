"""The Plan IR: a typed, deterministic, content-hashed DAG of steps. The engine runs only this.

Invariants:
- A `Plan` is immutable and validated on construction: step ids are unique, every dependency
  names an earlier-declared or later-declared step of the same plan, and there is no cycle.
- `Plan.content_hash()` is a SHA-256 of the plan's canonical JSON (sorted keys, no whitespace),
  so the same input always gives the same plan and the same hash, on any machine.
- `Plan.model_dump_json()` / `Plan.model_validate_json()` round-trip exactly.

Step kinds: `agent` (runs one agent), `merge` (combines its inputs' typed contributions and
surfaces conflicts), `gate` (waits for a person, or checks a condition), `control` (decides,
from its inputs, which steps come next: another consensus round, the next cascade tier, one
step per mapped item, the moderator's actions; see `core/expand.py`) and `subrun` (a whole
plan run on its own streams, whose result comes back as this step's output).

A plan grows only through `control` steps: their `steps.added` event (atomic with their
output) extends the plan in the run's fold, so a resumed or forked run sees the same graph.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from parallax.core.agent_spec import AgentKind as AgentKind
from parallax.core.agent_spec import AgentSpec as AgentSpec
from parallax.core.graphs import find_cycle as find_cycle
from parallax.core.tasks import TaskGraphSpec

StepKind = Literal["agent", "merge", "gate", "control", "subrun", "tasks"]
ControlKind = Literal["consensus", "cascade", "map", "review", "moderate", "orgchart", "escalate"]

_STEP_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
# A field path into contributions: dotted names, `[*]` for every item of a list.
FIELD_PATH = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\[\*\])*")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    """Attempts (the first included), exponential backoff from `backoff_s` doubling up to
    `max_backoff_s`, each delay spread by +/- `jitter` (a fraction)."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    max_backoff_s: Annotated[float, Field(ge=0)] = 30.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class RuleSpec(_Frozen):
    """A declared cross-check between contributions, evaluated by the merge.

    - every: each value at `each` must appear among the values at `in_`
      (e.g. every backend endpoint has an authorization rule).
    - disjoint: no value may appear both at `left` and at `right`
      (e.g. nothing sensitive is stored client-side).
    - python: `ref` names a callable (contributions dict -> list of Conflict).
    Paths are dotted, `[*]` fans out over a list: `backend.endpoints[*].path`.
    """

    name: str
    kind: Literal["every", "disjoint", "python"]
    each: str | None = None
    in_: str | None = Field(default=None, alias="in")
    left: str | None = None
    right: str | None = None
    ref: str | None = None
    message: str | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> RuleSpec:
        needs = {"every": ("each", "in_"), "disjoint": ("left", "right"), "python": ("ref",)}[self.kind]
        missing = [n.rstrip("_") for n in needs if not getattr(self, n)]
        if missing:
            raise ValueError(f"rule {self.name!r} ({self.kind}) needs {', '.join(missing)}")
        for name in ("each", "in_", "left", "right"):
            path = getattr(self, name)
            if path is not None and not FIELD_PATH.fullmatch(path):
                raise ValueError(f"rule {self.name!r}: {name.rstrip('_')} {path!r} is not a field path (a.b[*].c)")
        return self


class VoteSpec(_Frozen):
    """A vote over one field of every contribution: the most common value wins (by count, or by
    summed confidence when `weighted`); `agreement` is the winner's share. Dissent is kept as a
    conflict, never dropped."""

    field: Annotated[str, Field(pattern="^" + FIELD_PATH.pattern + "$")]
    weighted: bool = False


class MergeSpec(_Frozen):
    """How a merge step assembles its inputs.

    `target` (`module:Model`) is validated against the assembled document when set. Each
    input's contribution goes under its section name (`sections[step]`, default the step id);
    top-level fields of the target that are not sections are filled from same-named fields
    of the contributions, and only when every contribution that fills them agrees.
    """

    target: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    rules: tuple[RuleSpec, ...] = ()
    ignore: tuple[str, ...] = ()  # field names or paths that may differ between contributions
    vote: VoteSpec | None = None  # count the inputs' answers instead of assembling sections
    # How many inputs must contribute for the merge to succeed. None: every one (no gaps). A
    # merge short of it still records its conflicts (gaps included) but fails, and so does a run
    # whose result it is: a run whose work failed never reports success.
    min_contributions: Annotated[int, Field(ge=1)] | None = None

    def needed(self, inputs: int) -> int:
        return inputs if self.min_contributions is None else min(self.min_contributions, inputs)


class GateSpec(_Frozen):
    """`approval`: the run waits (durably) until a person approves or rejects this step.
    `check`: passes only when its inputs have no conflicts and at least `min_confidence`."""

    kind: Literal["approval", "check"]
    prompt: str | None = None
    timeout_s: float | None = None
    on_timeout: Literal["reject", "approve"] = "reject"
    min_confidence: float | None = None
    allow_conflicts: bool = False


class ConfidencePolicy(_Frozen):
    """What a step does with the confidence of a result (from the agent or `verify`):
    below `retry_below` it tries again (within `retry.max_attempts`); still below
    `escalate_below` it runs again on `escalate_model` (a stronger or costlier model; llm
    agents); finally below `accept` the step fails instead of passing a weak result on.
    A result without a confidence is accepted as it is."""

    accept: Annotated[float, Field(ge=0, le=1)] | None = None
    retry_below: Annotated[float, Field(ge=0, le=1)] | None = None
    escalate_below: Annotated[float, Field(ge=0, le=1)] | None = None
    escalate_model: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ConfidencePolicy:
        if self.escalate_below is not None and not self.escalate_model:
            raise ValueError("escalate_below needs escalate_model")
        return self


class ControlSpec(_Frozen):
    """A step that decides what runs next. `settings` are the controller's own (thresholds,
    round limits, ...); `templates` are the steps it instantiates (dumped `Step`s)."""

    kind: ControlKind
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    templates: tuple[dict[str, JsonValue], ...] = ()


class SubrunSpec(_Frozen):
    """A breakout: `plan` (a dumped Plan) runs as run `<run>.<step>` on its own streams, with
    `inputs` merged over its own; its result becomes this step's output."""

    plan: dict[str, JsonValue]
    inputs: dict[str, JsonValue] = Field(default_factory=dict)


class Step(_Frozen):
    id: Annotated[str, Field(pattern=_STEP_ID)]
    kind: StepKind
    after: tuple[str, ...] = ()
    agent: AgentSpec | None = None
    prompt: str | None = None  # a template: {{input.brief}}, {{steps.backend.output}}
    input: dict[str, JsonValue] = Field(default_factory=dict)
    output: str | None = None  # `module:Model`, or `types:Name` from the plan's types table
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    retry: RetryPolicy = RetryPolicy()
    verify: str | None = None  # a shell command; exit 0 sets confidence 1.0, else 0.0
    reads: tuple[str, ...] = ()  # extra streams (names or prefixes ending in '/') granted for reading
    confidence: ConfidencePolicy | None = None
    merge: MergeSpec | None = None
    gate: GateSpec | None = None
    control: ControlSpec | None = None
    subrun: SubrunSpec | None = None
    tasks: dict[str, JsonValue] | None = None  # a task graph (core/tasks.py TaskGraphSpec), as data
    # The agent's name in the pattern (stable across rounds: `critic` for step `critic.r2`);
    # prompts may say {{steps.<role>.output}}, and confidence history is kept per role.
    role: Annotated[str, Field(pattern=_STEP_ID)] | None = None
    # A cohort member: reads and posts to runs/<run>/cohorts/<cohort>, reads inbox/<cohort>, and
    # nothing of the other cohorts.
    cohort: Annotated[str, Field(pattern=_STEP_ID)] | None = None
    # A stream the step's output is also appended to (`{run}` is the run id), once, before the
    # output is recorded: a cohort's shared stream, or runs/{run}/synthesis.
    publish: str | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Step:
        spec = {
            "agent": self.agent,
            "merge": self.merge,
            "gate": self.gate,
            "control": self.control,
            "subrun": self.subrun,
            "tasks": self.tasks,
        }
        if spec[self.kind] is None:
            raise ValueError(f"step {self.id!r} is a {self.kind} step and needs `{self.kind}`")
        extra = [k for k, v in spec.items() if v is not None and k != self.kind]
        if extra:
            raise ValueError(f"step {self.id!r} is a {self.kind} step but also sets {', '.join(extra)}")
        if self.tasks is not None:
            TaskGraphSpec.model_validate(self.tasks)
        if self.kind == "merge" and not self.after:
            raise ValueError(f"merge step {self.id!r} has nothing to merge: list its inputs in `after`")
        return self

    @property
    def agent_name(self) -> str:
        return self.role or self.id


class Budget(_Frozen):
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    max_cost_usd: Annotated[float, Field(gt=0)] | None = None


class Limits(_Frozen):
    """Shared by every step of a run."""

    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[float, Field(gt=0)] | None = None
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_cooldown_s: Annotated[float, Field(gt=0)] = 30.0


class Plan(_Frozen):
    name: Annotated[str, Field(min_length=1)]
    steps: tuple[Step, ...]
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    budget: Budget = Budget()
    limits: Limits = Limits()
    cache_min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.8
    types: dict[str, dict[str, str]] = Field(default_factory=dict)  # inline output types (core/types.py)

    @model_validator(mode="after")
    def _check_graph(self) -> Plan:
        if not self.steps:
            raise ValueError("a plan needs at least one step")
        ids = [s.id for s in self.steps]
        seen: set[str] = set()
        for step_id in ids:
            if step_id in seen:
                raise ValueError(f"step id {step_id!r} is used twice")
            seen.add(step_id)
        for step in self.steps:
            for dep in step.after:
                if dep not in seen:
                    raise ValueError(f"step {step.id!r} depends on unknown step {dep!r}")
                if dep == step.id:
                    raise ValueError(f"step {step.id!r} depends on itself")
        cycle = find_cycle({s.id: s.after for s in self.steps})
        if cycle:
            raise ValueError(f"the steps form a cycle: {' -> '.join(cycle)}")
        return self

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def extended(self, added: tuple[Step, ...], rewire: dict[str, tuple[str, ...]] | None = None) -> Plan:
        """This plan plus `added`; every step that depended on a key of `rewire` depends on
        its replacement list instead (a controller handing its dependents to what it added)."""
        rewire = rewire or {}
        steps: list[Step] = []
        for step in self.steps:
            if any(dep in rewire for dep in step.after):
                after: list[str] = []
                for dep in step.after:
                    for new in rewire.get(dep, (dep,)):
                        if new not in after:
                            after.append(new)
                step = step.model_copy(update={"after": tuple(after)})
            steps.append(step)
        return self.model_copy(update={"steps": (*steps, *added)}).revalidated()

    def revalidated(self) -> Plan:
        return Plan.model_validate(self.model_dump(mode="python", by_alias=True))

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for step in self.steps:
            for dep in step.after:
                out[dep].append(step.id)
        return out

    def sinks(self) -> list[str]:
        """Steps nothing depends on: their outputs are the run's result."""
        return [step_id for step_id, deps in self.dependents().items() if not deps]

    def topological_order(self) -> list[str]:
        """Kahn's algorithm, ties broken by declaration order: deterministic."""
        index = {s.id: i for i, s in enumerate(self.steps)}
        remaining = {s.id: len(s.after) for s in self.steps}
        dependents = self.dependents()
        ready = [i for i, s in enumerate(self.steps) if not s.after]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            current = self.steps[heapq.heappop(ready)].id
            out.append(current)
            for nxt in dependents[current]:
                remaining[nxt] -= 1
                if remaining[nxt] == 0:
                    heapq.heappush(ready, index[nxt])
        return out

    def canonical_json(self) -> str:
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_shape(plan: Plan) -> str:
    """What kind of job a plan is, for the views that show it: `tasks` (a task graph),
    `cohorts` (cohorts and a moderator), `fanout` (contributions merged into one document),
    else `graph`."""
    steps = plan.steps
    if any(s.kind == "tasks" for s in steps):
        return "tasks"
    if any(s.cohort for s in steps) or any(s.control is not None and s.control.kind == "moderate" for s in steps):
        return "cohorts"
    if any(s.kind == "merge" for s in steps):
        return "fanout"
    return "graph"
