"""Run state as a pure fold of the run's control stream.

`fold(events)` gives the same `RunState` for the same events, wherever and whenever it runs.
`RunState.apply(event)` is the fold's step; only the holder of the fold calls it, and only with
events read back from (or acknowledged by) the control stream, so in-memory state never runs
ahead of the log. Applying an event that does not change anything (a second output for a step
that already has one) is a no-op, so re-reading an overlapping range is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from parallax.core import events as ev
from parallax.core.conflicts import Conflict
from parallax.core.events import Event
from parallax.core.plan import Plan, Step, plan_shape
from parallax.core.tasks import TASK_EVENTS, TaskBoard, TaskGraphSpec

StepStatus = Literal["pending", "running", "waiting", "succeeded", "failed", "skipped"]
RunStatus = Literal["created", "running", "succeeded", "failed", "budget_exhausted", "cancelled"]
TERMINAL_STEP: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})
TERMINAL_RUN: frozenset[str] = frozenset({"succeeded", "failed", "budget_exhausted", "cancelled"})


@dataclass
class Usage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, data: dict[str, Any]) -> None:
        self.requests += int(data.get("requests", 0) or 0)
        self.input_tokens += int(data.get("input_tokens", 0) or 0)
        self.output_tokens += int(data.get("output_tokens", 0) or 0)
        self.cost_usd += float(data.get("cost_usd", 0.0) or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass
class StepState:
    id: str
    status: StepStatus = "pending"
    attempts: int = 0
    output: Any = None
    confidence: float | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    cached: bool = False
    started_at: int | None = None
    finished_at: int | None = None
    skipped_reason: str | None = None
    output_seq: int | None = None  # where the output was recorded on the control stream
    escalated_model: str | None = None  # set once low confidence moved the step to a stronger model
    escalated_at: int = 0  # the attempt count when it did
    failures: int = 0  # step.failed events so far (names the next remote attempt, see engine.work)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STEP


@dataclass
class GateDecision:
    approved: bool
    by: str
    note: str
    seq_num: int


@dataclass
class RunState:
    run_id: str = ""
    plan: Plan | None = None
    plan_hash: str = ""
    source: str | None = None
    created_at: int = 0
    status: RunStatus = "created"
    steps: dict[str, StepState] = field(default_factory=dict[str, StepState])
    conflicts: list[Conflict] = field(default_factory=list[Conflict])
    usage: Usage = field(default_factory=Usage)
    result: Any = None
    circuits: dict[str, str] = field(default_factory=dict[str, str])
    gate_decisions: dict[str, GateDecision] = field(default_factory=dict[str, GateDecision])
    cancel_requested: bool = False
    budget_exhausted: bool = False
    coordinator: str | None = None
    forked_from: tuple[str, int] | None = None
    next_seq: int = 0  # one past the last record folded
    finished_at: int | None = None
    # Sessions kept by control steps (a moderator's phase, rounds, active cohorts), by name:
    # the last snapshot on the log is the state a resumed controller continues from.
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    requests: dict[int, dict[str, Any]] = field(default_factory=dict[int, dict[str, Any]])  # seq -> request
    applied: dict[int, str] = field(default_factory=dict[int, str])  # request seq -> what became of it
    divergence: dict[str, Any] | None = None
    tasks: TaskBoard | None = None  # the task graph's board, for runs with a `tasks` step

    @property
    def pending_requests(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted((seq, r) for seq, r in self.requests.items() if seq not in self.applied)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RUN

    def apply(self, event: Event) -> None:
        if event.seq_num >= 0:
            if event.seq_num < self.next_seq:
                return  # already folded
            self.next_seq = event.seq_num + 1
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)
        elif event.type in TASK_EVENTS and self.plan is not None:
            if self.tasks is None:
                spec = next((s.tasks for s in self.plan.steps if s.tasks is not None), None)
                if spec is None:
                    return
                self.tasks = TaskBoard.of(TaskGraphSpec.model_validate(spec))
            self.tasks.apply(event.type, event.data, event.timestamp)

    def step(self, step_id: str) -> StepState:
        state = self.steps.get(step_id)
        if state is None:
            state = self.steps[step_id] = StepState(step_id)
        return state


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState:
    out = state if state is not None else RunState()
    for event in events:
        out.apply(event)
    return out


# Validating a large plan is the costliest part of folding a run; the same plan (by content
# hash) always validates to the same immutable Plan, so it is memoised.
_PLANS: dict[str, Plan] = {}


def plan_from(data: dict[str, Any]) -> Plan:
    digest = data.get("plan_hash")
    plan = _PLANS.get(digest) if isinstance(digest, str) else None
    if plan is None:
        plan = Plan.model_validate(data["plan"])
        if isinstance(digest, str) and plan.content_hash() == digest:
            if len(_PLANS) > 64:
                _PLANS.clear()
            _PLANS[digest] = plan
    return plan


def remember_plan(plan: Plan, digest: str | None = None) -> None:
    """Let folds reuse a Plan object already validated in this process (`digest`: its
    content hash, when the caller has it)."""
    _PLANS[digest or plan.content_hash()] = plan


def _created(state: RunState, event: Event) -> None:
    data = event.data
    state.run_id = data["run_id"]
    state.plan = plan_from(data)
    state.plan_hash = data.get("plan_hash", "")
    state.source = data.get("source")
    state.created_at = event.timestamp
    state.steps = {step.id: StepState(step.id) for step in state.plan.steps}
    state.status = "running"


def _resumed(state: RunState, event: Event) -> None:
    state.coordinator = ev.RunResumed.read(event).coordinator
    if not state.finished:
        state.status = "running"


def _forked(state: RunState, event: Event) -> None:
    state.run_id = event.data["run_id"]
    state.forked_from = (event.data["from_run"], int(event.data["at_seq"]))
    if "plan" in event.data:
        state.plan = plan_from(event.data)
        state.plan_hash = event.data.get("plan_hash", "")
        for step in state.plan.steps:
            state.steps.setdefault(step.id, StepState(step.id))
    state.status = "running"
    state.result = None
    state.finished_at = None


def _started(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if step.done:
        return
    step.status = "running"
    attempt = ev.StepStarted.read(event).attempt
    step.attempts = max(step.attempts, int(attempt if attempt is not None else step.attempts + 1))
    step.started_at = event.timestamp
    step.error = None


def _output(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if step.status == "succeeded":
        return
    output = ev.StepOutput.read(event)
    step.status = "succeeded"
    step.output = output.output
    step.confidence = None if output.confidence is None else float(output.confidence)
    step.cached = bool(output.cached)
    step.finished_at = event.timestamp
    step.output_seq = event.seq_num
    step.error = None
    usage = output.usage or {}
    step.usage.add(usage)
    state.usage.add(usage)


def _failed(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if step.done:
        return
    failed = ev.StepFailed.read(event)
    step.error = failed.error
    step.failures += 1
    usage = failed.usage or {}
    step.usage.add(usage)
    state.usage.add(usage)
    if failed.final:
        step.status = "failed"
        step.finished_at = event.timestamp


def _escalated(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if not step.done and step.escalated_model is None:
        escalated = ev.StepEscalated.read(event)
        step.escalated_model = str(escalated.model)
        step.escalated_at = int(escalated.attempt if escalated.attempt is not None else step.attempts)


def _skipped(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if step.done:
        return
    step.status = "skipped"
    step.skipped_reason = ev.StepSkipped.read(event).reason
    step.finished_at = event.timestamp


def _steps_added(state: RunState, event: Event) -> None:
    if state.plan is None:
        return
    grown = ev.StepsAdded.read(event)
    added = tuple(Step.model_validate(s) for s in grown.steps or ())
    known = {s.id for s in state.plan.steps}
    added = tuple(s for s in added if s.id not in known)
    rewire = {k: tuple(v) for k, v in (grown.rewire or {}).items()}
    if added or rewire:
        state.plan = state.plan.extended(added, rewire)
    for step in added:
        state.steps.setdefault(step.id, StepState(step.id))
    session = grown.session
    if isinstance(session, dict) and "name" in session:
        state.sessions[str(session["name"])] = session
    for seq, outcome in (grown.applied or {}).items():
        state.applied[int(seq)] = str(outcome)


def _topology_requested(state: RunState, event: Event) -> None:
    state.requests[event.seq_num] = dict(event.data)


def _topology_applied(state: RunState, event: Event) -> None:
    for seq, outcome in (ev.TopologyApplied.read(event).applied or {}).items():
        state.applied[int(seq)] = str(outcome)


def _divergence(state: RunState, event: Event) -> None:
    state.divergence = dict(event.data)


def _conflict(state: RunState, event: Event) -> None:
    state.conflicts.append(Conflict.model_validate(ev.ConflictFound.read(event).conflict))


def _gate_waiting(state: RunState, event: Event) -> None:
    step = state.step(event.step or "")
    if not step.done:
        step.status = "waiting"
        if step.started_at is None:
            step.started_at = event.timestamp


def _gate_decided(state: RunState, event: Event) -> None:
    step_id = event.step or ""
    if step_id in state.gate_decisions:
        return  # the first decision stands
    decided = ev.GateDecided.read(event)
    state.gate_decisions[step_id] = GateDecision(
        approved=bool(decided.approved), by=str(decided.by), note=str(decided.note), seq_num=event.seq_num
    )


def _circuit(state: RunState, event: Event) -> None:
    circuit = ev.CircuitChanged.read(event)
    state.circuits[circuit.provider] = circuit.state


def _budget(state: RunState, event: Event) -> None:
    state.budget_exhausted = True


def _cancel(state: RunState, event: Event) -> None:
    state.cancel_requested = True


def _finished(state: RunState, event: Event) -> None:
    finished = ev.RunFinished.read(event)
    state.status = finished.status  # type: ignore[assignment]
    if finished.result_steps is not None:
        outputs = {s: state.steps[s].output for s in finished.result_steps if s in state.steps}
        single = finished.single_result and len(outputs) == 1
        state.result = next(iter(outputs.values())) if single else outputs
    else:
        state.result = finished.result
    state.finished_at = event.timestamp


_HANDLERS = {
    ev.RUN_CREATED: _created,
    ev.RUN_RESUMED: _resumed,
    ev.RUN_FORKED: _forked,
    ev.STEP_STARTED: _started,
    ev.STEP_OUTPUT: _output,
    ev.STEP_FAILED: _failed,
    ev.STEP_SKIPPED: _skipped,
    ev.STEP_ESCALATED: _escalated,
    ev.CONFLICT_FOUND: _conflict,
    ev.STEPS_ADDED: _steps_added,
    ev.TOPOLOGY_REQUESTED: _topology_requested,
    ev.TOPOLOGY_APPLIED: _topology_applied,
    ev.DIVERGENCE: _divergence,
    ev.GATE_WAITING: _gate_waiting,
    ev.GATE_DECIDED: _gate_decided,
    ev.CIRCUIT_CHANGED: _circuit,
    ev.BUDGET_EXHAUSTED: _budget,
    ev.RUN_CANCEL_REQUESTED: _cancel,
    ev.RUN_FINISHED: _finished,
}


def describe(state: RunState) -> dict[str, Any]:
    """The run as one JSON-able dict: what `parallax inspect --json` prints."""
    steps = []
    plan_steps = state.plan.steps if state.plan else ()
    for spec in plan_steps:
        step = state.steps.get(spec.id) or StepState(spec.id)
        duration = (
            step.finished_at - step.started_at if step.finished_at is not None and step.started_at is not None else None
        )
        steps.append(
            {
                "id": step.id,
                "kind": spec.kind,
                "agent": spec.agent.kind if spec.agent else None,
                "model": spec.agent.model if spec.agent else None,
                "after": list(spec.after),
                "role": spec.role,
                "cohort": spec.cohort,
                "status": step.status,
                "attempts": step.attempts,
                "confidence": step.confidence,
                "cached": step.cached,
                "usage": step.usage.as_dict(),
                "error": step.error,
                "skipped_reason": step.skipped_reason,
                "duration_ms": duration,
                "output": step.output,
            }
        )
        if spec.kind == "merge" and spec.merge is not None:
            # Which input filled which section of the merged document (its provenance).
            steps[-1]["sections"] = {spec.merge.sections.get(dep, dep): dep for dep in spec.after}
    return {
        "run_id": state.run_id,
        "plan": state.plan.name if state.plan else None,
        "plan_hash": state.plan_hash,
        "shape": plan_shape(state.plan) if state.plan else None,
        "source": state.source,
        "status": state.status,
        "created_at": state.created_at,
        "finished_at": state.finished_at,
        "forked_from": list(state.forked_from) if state.forked_from else None,
        "usage": state.usage.as_dict(),
        "steps": steps,
        "conflicts": [c.model_dump(mode="json") for c in state.conflicts],
        "circuits": state.circuits,
        "budget_exhausted": state.budget_exhausted,
        "sessions": state.sessions,
        "requests": [
            {"seq": seq, **request, "outcome": state.applied.get(seq, "pending")}
            for seq, request in sorted(state.requests.items())
        ],
        "divergence": state.divergence,
        "tasks": None
        if state.tasks is None
        else {
            t.id: {
                "status": t.status,
                "holder": t.holder,
                "attempt": t.attempt,
                "commit": t.commit,
                "changed": list(t.changed),
                "error": t.error,
                "after": list(state.tasks.spec.task(t.id).after),
                "writes": list(state.tasks.spec.task(t.id).writes),
                "verify": state.tasks.spec.task(t.id).verify or state.tasks.spec.verify,
                "feedback": t.feedback,
                "review": state.tasks.spec.review,
                "changed_so_far": list(t.changed_so_far),  # while it runs (its peers see the same)
                "resolution": t.resolution.as_dict() if t.resolution is not None else None,
                "usage": dict(t.usage),
            }
            for t in state.tasks.tasks.values()
        },
        "result": state.result,
    }


def describe_gap(state: StepState) -> str:
    if state.status == "skipped":
        return f"was skipped ({state.skipped_reason})"
    if state.error and "timeout" in state.error:
        return f"timed out ({state.error})"
    if state.status == "failed":
        return f"failed ({state.error})"
    return f"is {state.status}"
