"""Schedules: cron expressions that start a pattern, kept on the `schedules` stream.

A schedule is `schedule.created` (id, cron, the pattern, inputs, missed-run policy) until a
`schedule.deleted`. Firing is `schedule.fired` (the due time and the run it started), appended
conditionally at the tail the scheduler folded, so two servers sharing a store never fire the
same due time twice. After a restart, due times missed while nothing was running are handled
by the policy: `skip` (go on from now) or `once` (one run for all of them, then go on).
Cron expressions have 5 fields, or 6 with seconds first (croniter reads them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from croniter import croniter

from parallax.core.errors import SeqNumMismatch, StreamNotFound, UserError
from parallax.core.events import Event, decode_event
from parallax.streams.base import AppendInput, AppendRecord, StreamStore

STREAM = "schedules"


@dataclass
class Schedule:
    id: str
    cron: str
    pattern: str | None
    target: str | None
    inputs: dict[str, Any]
    missed: Literal["skip", "once"]
    created_ms: int
    last_due_ms: int | None = None
    runs: list[str] = field(default_factory=list[str])

    def next_due(self, after_ms: int) -> int:
        base = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
        return int(croniter(self.cron, base, second_at_beginning=len(self.cron.split()) == 6).get_next(float) * 1000)


def check_cron(cron: str) -> None:
    fields = len(cron.split())
    try:
        valid = fields in (5, 6) and croniter.is_valid(cron, second_at_beginning=fields == 6)
    except Exception:  # croniter raises more than its own errors on odd input (schemathesis found one)
        valid = False
    if not valid:
        raise UserError(f"{cron!r} is not a cron expression (5 fields, or 6 with seconds first)")


class Scheduler:
    def __init__(self, store: StreamStore, start_run: Callable[[Schedule, str], Awaitable[str]]) -> None:
        self.store = store
        self.start_run = start_run
        self.schedules: dict[str, Schedule] = {}
        self.tail = 0
        self.last_error: str | None = None

    async def sync(self) -> None:
        try:
            records = await self.store.read_all(STREAM, self.tail)
        except StreamNotFound:
            return
        for record in records:
            self.tail = record.seq_num + 1
            event = decode_event(record.headers, record.body, record.seq_num, record.timestamp)
            if event is None:
                continue
            data = event.data
            if event.type == "schedule.created":
                self.schedules[data["id"]] = Schedule(
                    data["id"], data["cron"], data.get("pattern"), data.get("target"), data.get("inputs", {}),
                    data.get("missed", "skip"), record.timestamp,
                )  # fmt: skip
            elif event.type == "schedule.deleted":
                self.schedules.pop(data["id"], None)
            elif event.type == "schedule.fired" and data["id"] in self.schedules:
                schedule = self.schedules[data["id"]]
                schedule.last_due_ms = max(schedule.last_due_ms or 0, int(data["due_ms"]))
                if data.get("run_id"):
                    schedule.runs.append(data["run_id"])

    async def _append(self, event: Event, match: int | None = None) -> None:
        headers, body = event.encode()
        await self.store.append(STREAM, AppendInput([AppendRecord(body=body, headers=headers)], match_seq_num=match))

    async def create(self, schedule_id: str, cron: str, missed: str, **run: Any) -> None:
        check_cron(cron)
        if missed not in ("skip", "once"):
            raise UserError("missed must be skip or once")
        await self.sync()
        if schedule_id in self.schedules:
            raise UserError(f"schedule {schedule_id!r} exists")
        await self._append(Event("schedule.created", {"id": schedule_id, "cron": cron, "missed": missed, **run}))
        await self.sync()

    async def delete(self, schedule_id: str) -> None:
        await self.sync()
        if schedule_id not in self.schedules:
            raise UserError(f"no schedule {schedule_id!r}")
        await self._append(Event("schedule.deleted", {"id": schedule_id}))
        await self.sync()

    async def tick(self, now_ms: int | None = None) -> list[str]:
        """Fire what is due; returns the runs started."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        await self.sync()
        started: list[str] = []
        for schedule in list(self.schedules.values()):
            last = schedule.last_due_ms or schedule.created_ms
            due = schedule.next_due(last)
            if due > now:
                continue
            latest = due
            while (following := schedule.next_due(latest)) <= now:
                latest = following
            missed = latest != due
            if missed and schedule.missed == "skip" and now - latest > 2000:
                # nothing runs for missed times; remember we are past them
                fire: Event = Event("schedule.fired", {"id": schedule.id, "due_ms": latest, "skipped": True})
                run_it = False
            else:
                fire = Event("schedule.fired", {"id": schedule.id, "due_ms": latest, "missed": missed})
                run_it = True
            run_id = f"{schedule.id}-{latest // 1000}"
            if run_it:
                fire = Event("schedule.fired", {**fire.data, "run_id": run_id})
            try:
                await self._append(fire, match=self.tail)
            except SeqNumMismatch:
                await self.sync()  # another server moved first; look again next tick
                continue
            await self.sync()
            if run_it:
                started.append(await self.start_run(schedule, run_id))
        return started

    async def loop(self, interval_s: float = 0.5) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except Exception as e:  # kept and shown by GET /schedules; the others go on
                self.last_error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(interval_s)
