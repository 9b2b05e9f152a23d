"""A worker's hold on a run's task board: fold the control stream, decide, append at the tail.

Claims are conditional appends (`match_seq_num` = the tail this worker folded): if anyone
appended in between, the claim is refused by the store, the worker folds what changed and
decides again. There is no lock server; the store's append order is the arbiter, across
threads, processes and (with a shared store) machines. Leases are renewed by heartbeats; a
worker that stops heartbeating loses its task when the lease runs out, and anything it appends
afterwards is ignored by the fold (`TaskBoard.apply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parallax import telemetry
from parallax.core.events import Event
from parallax.core.tasks import (
    TASK_CLAIMED,
    TASK_EVENTS,
    TASK_HEARTBEAT,
    TaskBoard,
    TaskGraphSpec,
)
from parallax.engine.control import control_stream
from parallax.streams.base import StreamStore
from parallax.streams.folded import EVENTS, FoldedStream
from parallax.streams.semantics import now_ms


@dataclass(frozen=True)
class Claim:
    task: str
    attempt: int
    lease_until: int


class TaskClient:
    """A worker's fold of the run's task board (`FoldedStream` over the control stream)."""

    def __init__(self, store: StreamStore, run_id: str, worker: str, spec: TaskGraphSpec) -> None:
        self.store = store
        self.run_id = run_id
        self.worker = worker
        self.spec = spec
        self.board = TaskBoard.of(spec)
        self.stream = control_stream(run_id)
        self.folded = FoldedStream(store, self.stream, self._apply, EVENTS)

    def _apply(self, event: Event) -> bool | None:
        if event.type not in TASK_EVENTS:
            return None
        return self.board.apply(event.type, event.data, event.timestamp)

    @property
    def tail(self) -> int:
        return self.folded.tail

    async def sync(self) -> None:
        await self.folded.sync()

    async def claim(self, files: tuple[str, ...] = ()) -> Claim | None:
        """Claim the next task this worker may run, or None when nothing is claimable now."""
        chosen: dict[str, Any] = {}

        def decide() -> list[Event] | None:
            now = now_ms()
            task = self.board.pick(now, files)
            if task is None:
                return None
            attempt = self.board.tasks[task].attempt + 1
            chosen.update(task=task, attempt=attempt, lease_until=now + int(self.spec.lease_s * 1000))
            data = {"task": task, "worker": self.worker, "attempt": attempt, "lease_until": chosen["lease_until"]}
            return [Event(TASK_CLAIMED, data)]

        while True:
            with telemetry.span(
                "parallax.claim", {"parallax.worker": self.worker, "parallax.stream": self.stream}
            ) as current:
                appended = await self.folded.decide_and_append(decide)
                if appended is None:
                    return None
                won = appended.all_accepted
                current.set_attributes(
                    {"parallax.task": chosen["task"], "parallax.seq": appended.start,
                     "parallax.outcome": "won" if won else "refused"}
                )  # fmt: skip
            if won:
                return Claim(chosen["task"], chosen["attempt"], chosen["lease_until"])

    async def report(self, kind: str, claim: Claim, **data: Any) -> bool:
        """Append an event about a task this worker holds; True if the fold accepted it (the
        worker still held a live lease)."""
        event = Event(kind, {"task": claim.task, "worker": self.worker, "attempt": claim.attempt, **data})
        appended = await self.folded.append([event], conditional=False)
        return appended is not None and appended.all_accepted

    async def append(self, event: Event) -> bool:
        """Append any task event (a requeue, a merge) wherever the tail is; whether it was accepted."""
        appended = await self.folded.append([event], conditional=False)
        return appended is not None and appended.all_accepted

    async def heartbeat(self, claim: Claim) -> Claim | None:
        """Renew the lease; None if it was already lost."""
        lease_until = now_ms() + int(self.spec.lease_s * 1000)
        if await self.report(TASK_HEARTBEAT, claim, lease_until=lease_until):
            return Claim(claim.task, claim.attempt, lease_until)
        return None

    async def wait_for_change(self, timeout_s: float) -> None:
        await self.folded.wait_for_change(timeout_s)
