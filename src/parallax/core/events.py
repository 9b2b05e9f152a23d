"""Events: the typed records a run writes on its streams.

An event is a frozen (type, data) pair plus the `step` and `agent` it concerns. On a stream it is
one record: headers `type`, `step`, `agent` (when set) and `idem` (an idempotency key for events
that must not be applied twice), body the JSON of `data`. The codec here is pure: it produces
and reads header tuples and bytes, and knows nothing of stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
