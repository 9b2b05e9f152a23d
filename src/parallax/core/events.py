"""Events: the typed records a run writes on its streams.

An event is a frozen (type, data) pair plus the `step` and `agent` it concerns. On a stream it is
one record: headers `type`, `step`, `agent` (when set) and `idem` (an idempotency key for events
that must not be applied twice), body the JSON of `data`. The codec here is pure: it produces
and reads header tuples and bytes, and knows nothing of stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

import orjson

# Control stream: runs/<run>/control
RUN_CREATED = "run.created"
RUN_RESUMED = "run.resumed"
RUN_FORKED = "run.forked"
RUN_CANCEL_REQUESTED = "run.cancel_requested"
RUN_FINISHED = "run.finished"
STEP_STARTED = "step.started"
STEP_OUTPUT = "step.output"
STEP_FAILED = "step.failed"
STEP_RETRY = "step.retry"
STEP_SKIPPED = "step.skipped"
STEP_ESCALATED = "step.escalated"
CONFLICT_FOUND = "conflict.found"
GATE_WAITING = "gate.waiting"
GATE_DECIDED = "gate.decided"
CIRCUIT_CHANGED = "circuit.changed"
BUDGET_EXHAUSTED = "budget.exhausted"
STEPS_ADDED = "steps.added"  # a control step grew the plan (atomic with its output)
TOPOLOGY_REQUESTED = "topology.requested"  # a person or process asks a live run to change shape
TOPOLOGY_APPLIED = "topology.applied"  # the coordinator carried a request out (or refused it)
DIVERGENCE = "run.divergence"  # how far the cohorts' conclusions differ

# Cohort streams: runs/<run>/cohorts/<name>; inboxes: runs/<run>/inbox/<target>
COHORT_MESSAGE = "cohort.message"
INBOX_MESSAGE = "inbox.message"

# Agent streams: runs/<run>/agents/<agent>
AGENT_INPUT = "agent.input"
AGENT_CHUNK = "agent.chunk"
AGENT_TOOL_CALL = "agent.tool_call"
AGENT_TOOL_RESULT = "agent.tool_result"
AGENT_LOG = "agent.log"

Headers = tuple[tuple[bytes, bytes], ...]


# Work boards: runs/<run>/work (agent attempts offered to worker processes) and work/runs
WORK_OFFERED = "work.offered"
WORK_CLAIMED = "work.claimed"
WORK_RENEWED = "work.renewed"
WORK_DONE = "work.done"
WORK_FAILED = "work.failed"
WORK_WITHDRAWN = "work.withdrawn"
RUN_SUBMITTED = "run.submitted"  # on work/runs: a run any worker may coordinate
RUN_CLOSED = "run.closed"  # on work/runs: finished, nothing left to do


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any] = field(default_factory=dict[str, Any])
    step: str | None = None
    agent: str | None = None
    idem: str | None = None
    seq_num: int = -1  # set when read back from a stream
    timestamp: int = 0

    def encode(self) -> tuple[Headers, bytes]:
        headers: list[tuple[bytes, bytes]] = [(b"type", self.type.encode())]
        if self.step is not None:
            headers.append((b"step", self.step.encode()))
        if self.agent is not None:
            headers.append((b"agent", self.agent.encode()))
        if self.idem is not None:
            headers.append((b"idem", self.idem.encode()))
        body = orjson.dumps(self.data, default=str) if self.data else b""
        return tuple(headers), body


def decode_event(headers: Sequence[tuple[bytes, bytes]], body: bytes, seq_num: int, timestamp: int) -> Event | None:
    """The event a record holds, or None for a record that is not an event (a command record,
    or a line someone appended by hand)."""
    kind = step = agent = idem = None
    for name, value in headers:
        if name == b"type":
            kind = value.decode()
        elif name == b"step":
            step = value.decode()
        elif name == b"agent":
            agent = value.decode()
        elif name == b"idem":
            idem = value.decode()
    if kind is None:
        return None
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {"text": body.decode("utf-8", "replace")}
    if not isinstance(data, dict):
        data = {"value": data}
    return Event(kind, data, step, agent, idem, seq_num, timestamp)


# Typed payloads of the control events the engine writes and the fold reads.
#
# Each is a frozen dataclass naming its event type; `event()` turns it into an Event (a field
# left at its default is not written, except those listed in `KEEP`, so the log stays compact)
# and `read(event)` turns an event's data back into it (unknown keys ignored, missing keys
# defaulted: records written by older versions still read).


@dataclass(frozen=True, slots=True)
class Payload:
    TYPE: ClassVar[str] = ""
    KEEP: ClassVar[frozenset[str]] = frozenset()

    def data(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name, always, default in _shape(type(self))
            if always or getattr(self, name) != default
        }

    def event(self, step: str | None = None, agent: str | None = None, idem: str | None = None) -> Event:
        return Event(self.TYPE, self.data(), step, agent, idem)

    @classmethod
    def read(cls, event: Event) -> Self:
        data = event.data
        return cls(**{name: data[name] for name, _, _ in _shape(cls) if name in data})


_REQUIRED = object()
_SHAPES: dict[type, tuple[tuple[str, bool, Any], ...]] = {}


def _shape(cls: type[Payload]) -> tuple[tuple[str, bool, Any], ...]:
    """(name, always written, default) per field of a payload class, worked out once."""
    shape = _SHAPES.get(cls)
    if shape is None:
        out = []
        for f in fields(cls):
            default: Any = _REQUIRED
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            out.append((f.name, f.name in cls.KEEP or default is _REQUIRED, default))
        shape = _SHAPES[cls] = tuple(out)
    return shape


@dataclass(frozen=True, slots=True)
class RunResumed(Payload):
    TYPE: ClassVar[str] = RUN_RESUMED
    KEEP: ClassVar[frozenset[str]] = frozenset({"coordinator"})
    coordinator: str | None = None


@dataclass(frozen=True, slots=True)
class RunCancelRequested(Payload):
    TYPE: ClassVar[str] = RUN_CANCEL_REQUESTED
    KEEP: ClassVar[frozenset[str]] = frozenset({"reason"})
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunFinished(Payload):
    """The run's outcome. The result is not copied: `result_steps` names the sink steps whose
    outputs it is (one output when `single_result`). Older records carry `result` itself."""

    TYPE: ClassVar[str] = RUN_FINISHED
    KEEP: ClassVar[frozenset[str]] = frozenset({"result_steps", "single_result", "usage", "conflicts"})
    status: str
    result_steps: list[str] | None = None
    single_result: bool = False
    usage: dict[str, Any] = field(default_factory=dict[str, Any])
    conflicts: int = 0
    result: Any = None
    steps: int = 0  # how many steps the run had at the end (grown ones included); 0: not recorded
    succeeded: int = 0  # how many of them succeeded


@dataclass(frozen=True, slots=True)
class StepStarted(Payload):
    TYPE: ClassVar[str] = STEP_STARTED
    KEEP: ClassVar[frozenset[str]] = frozenset({"attempt"})
    attempt: int | None = None
    kind: str = ""
    run: str | None = None  # a sub-run step: the child run it started
    model: str | None = None  # the model, when it is not the plan's (`--model` on resume or fork)


@dataclass(frozen=True, slots=True)
class StepOutput(Payload):
    TYPE: ClassVar[str] = STEP_OUTPUT
    KEEP: ClassVar[frozenset[str]] = frozenset({"output", "confidence", "attempt"})
    output: Any = None
    confidence: float | None = None
    usage: dict[str, Any] = field(default_factory=dict[str, Any])
    attempt: int = 0
    cached: bool = False  # served from the result cache
    recovered: bool = False  # found already published after a crash


@dataclass(frozen=True, slots=True)
class StepFailed(Payload):
    """One attempt failed; `final` says the step failed (no attempt is left)."""

    TYPE: ClassVar[str] = STEP_FAILED
    KEEP: ClassVar[frozenset[str]] = frozenset({"error", "final"})
    error: str | None = None
    final: bool = True
    attempt: int | None = None
    error_type: str | None = None
    usage: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True, slots=True)
class StepRetry(Payload):
    TYPE: ClassVar[str] = STEP_RETRY
    attempt: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class StepSkipped(Payload):
    TYPE: ClassVar[str] = STEP_SKIPPED
    KEEP: ClassVar[frozenset[str]] = frozenset({"reason"})
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StepEscalated(Payload):
    TYPE: ClassVar[str] = STEP_ESCALATED
    model: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class GateWaiting(Payload):
    TYPE: ClassVar[str] = GATE_WAITING
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class GateDecided(Payload):
    TYPE: ClassVar[str] = GATE_DECIDED
    KEEP: ClassVar[frozenset[str]] = frozenset({"approved", "by", "note"})
    approved: bool = False
    by: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class CircuitChanged(Payload):
    TYPE: ClassVar[str] = CIRCUIT_CHANGED
    provider: str
    state: str


@dataclass(frozen=True, slots=True)
class BudgetExhausted(Payload):
    TYPE: ClassVar[str] = BUDGET_EXHAUSTED
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConflictFound(Payload):
    TYPE: ClassVar[str] = CONFLICT_FOUND
    conflict: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepsAdded(Payload):
    """A control step grew the plan (`steps`, as Step dumps), rewired dependencies (step id ->
    its new `after`), saved its session, and carried out topology requests (`applied`)."""

    TYPE: ClassVar[str] = STEPS_ADDED
    KEEP: ClassVar[frozenset[str]] = frozenset({"steps", "rewire", "session", "applied"})
    steps: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    rewire: dict[str, list[str]] = field(default_factory=dict[str, list[str]])
    session: dict[str, Any] | None = None
    applied: dict[str, str] = field(default_factory=dict[str, str])


@dataclass(frozen=True, slots=True)
class TopologyApplied(Payload):
    """Requests (by the seq of their `topology.requested`) carried out or refused, and how."""

    TYPE: ClassVar[str] = TOPOLOGY_APPLIED
    applied: dict[str, str] = field(default_factory=dict[str, str])
