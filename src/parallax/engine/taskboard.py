"""A worker's hold on a run's task board: fold the control stream, decide, append at the tail.

Claims are conditional appends (`match_seq_num` = the tail this worker folded): if anyone
appended in between, the claim is refused by the store, the worker folds what changed and
decides again. There is no lock server; the store's append order is the arbiter, across
threads, processes and (with a shared store) machines. Leases are renewed by heartbeats; a
worker that stops heartbeating loses its task when the lease runs out, and anything it appends
afterwards is ignored by the fold (`TaskBoard.apply`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from parallax import telemetry
from parallax.core.errors import SeqNumMismatch
from parallax.core.events import Event, decode_event
from parallax.core.tasks import (
    TASK_CLAIMED,
    TASK_EVENTS,
    TASK_HEARTBEAT,
    TaskBoard,
    TaskGraphSpec,
)
from parallax.engine.control import control_stream
from parallax.streams.base import AppendInput, AppendRecord, StreamStore
from parallax.streams.semantics import now_ms


@dataclass(frozen=True)
class Claim:
    task: str
    attempt: int
    lease_until: int


def _record(event: Event) -> AppendRecord:
    headers, body = event.encode()
    return AppendRecord(body=body, headers=headers)


class TaskClient:
    def __init__(self, store: StreamStore, run_id: str, worker: str, spec: TaskGraphSpec) -> None:
        self.store = store
        self.run_id = run_id
        self.worker = worker
        self.spec = spec
        self.board = TaskBoard.of(spec)
        self.stream = control_stream(run_id)
        self.tail = 0
        self._lock = asyncio.Lock()
        self._mine: dict[int, bool] = {}  # seq -> accepted, for this worker's own events

    async def sync(self) -> None:
        async with self._lock:
            for record in await self.store.read_all(self.stream, self.tail):
                self.tail = record.seq_num + 1
                event = decode_event(record.headers, record.body, record.seq_num, record.timestamp)
                if event is not None and event.type in TASK_EVENTS:
                    accepted = self.board.apply(event.type, event.data, event.timestamp)
                    if event.data.get("worker") == self.worker:
                        self._mine[record.seq_num] = accepted

    async def claim(self, files: tuple[str, ...] = ()) -> Claim | None:
        """Claim the next task this worker may run, or None when nothing is claimable now."""
        while True:
            await self.sync()
            now = now_ms()
            task = self.board.pick(now, files)
            if task is None:
                return None
            attempt = self.board.tasks[task].attempt + 1
            lease_until = now + int(self.spec.lease_s * 1000)
            event = Event(
                TASK_CLAIMED, {"task": task, "worker": self.worker, "attempt": attempt, "lease_until": lease_until}
            )
            with telemetry.span(
                "parallax.claim",
                {"parallax.task": task, "parallax.worker": self.worker, "parallax.stream": self.stream},
            ) as current:
                try:
                    ack = await self.store.append(self.stream, AppendInput([_record(event)], match_seq_num=self.tail))
                except SeqNumMismatch:
                    current.set_attribute("parallax.outcome", "lost the race")
                    continue  # someone else appended first: fold it and decide again
                await self.sync()
                state = self.board.tasks[task]
                won = state.holder == self.worker and state.attempt == attempt
                current.set_attributes(
                    {"parallax.seq": ack.start.seq_num, "parallax.outcome": "won" if won else "refused"}
                )
            if won:
                return Claim(task, attempt, lease_until)

    async def report(self, kind: str, claim: Claim, **data: Any) -> bool:
        """Append an event about a task this worker holds; True if the fold accepted it (the
        worker still held a live lease)."""
        event = Event(kind, {"task": claim.task, "worker": self.worker, "attempt": claim.attempt, **data})
        ack = await self.store.append(self.stream, AppendInput([_record(event)]))
        await self.sync()
        return self._mine.pop(ack.start.seq_num, False)

    async def heartbeat(self, claim: Claim) -> Claim | None:
        """Renew the lease; None if it was already lost."""
        lease_until = now_ms() + int(self.spec.lease_s * 1000)
        if await self.report(TASK_HEARTBEAT, claim, lease_until=lease_until):
            return Claim(claim.task, claim.attempt, lease_until)
        return None

    async def wait_for_change(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.store.wait_for_tail(self.stream, self.tail)
        except TimeoutError:
            pass
