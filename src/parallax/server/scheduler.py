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

from parallax.core.errors import UserError
from parallax.core.events import Event
from parallax.core.runstreams import SCHEDULES
from parallax.streams.base import StreamStore
from parallax.streams.folded import EVENTS, FoldedStream

STREAM = SCHEDULES


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
    """The schedules, folded from the `schedules` stream (a `FoldedStream`): creating, deleting
    and firing are decided on the fresh fold and appended at its tail."""

    def __init__(self, store: StreamStore, start_run: Callable[[Schedule, str], Awaitable[str]]) -> None:
        self.store = store
        self.start_run = start_run
        self.schedules: dict[str, Schedule] = {}
        self.folded = FoldedStream(store, STREAM, self._apply, EVENTS)
        self.last_error: str | None = None

    @property
    def tail(self) -> int:
        return self.folded.tail

    def _apply(self, event: Event) -> None:
        data = event.data
        if event.type == "schedule.created":
            self.schedules[data["id"]] = Schedule(
                data["id"], data["cron"], data.get("pattern"), data.get("target"), data.get("inputs", {}),
                data.get("missed", "skip"), event.timestamp,
            )  # fmt: skip
        elif event.type == "schedule.deleted":
            self.schedules.pop(data["id"], None)
        elif event.type == "schedule.fired" and data["id"] in self.schedules:
            schedule = self.schedules[data["id"]]
            schedule.last_due_ms = max(schedule.last_due_ms or 0, int(data["due_ms"]))
            if data.get("run_id"):
                schedule.runs.append(data["run_id"])

    async def sync(self) -> None:
        await self.folded.sync()

    async def create(self, schedule_id: str, cron: str, missed: str, **run: Any) -> None:
        check_cron(cron)
        if missed not in ("skip", "once"):
            raise UserError("missed must be skip or once")

        def decide() -> list[Event]:
            if schedule_id in self.schedules:
                raise UserError(f"schedule {schedule_id!r} exists")
            return [Event("schedule.created", {"id": schedule_id, "cron": cron, "missed": missed, **run})]

        await self.folded.decide_and_append(decide)

    async def delete(self, schedule_id: str) -> None:
        def decide() -> list[Event]:
            if schedule_id not in self.schedules:
                raise UserError(f"no schedule {schedule_id!r}")
            return [Event("schedule.deleted", {"id": schedule_id})]

        await self.folded.decide_and_append(decide)

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
            if await self.folded.append([fire]) is None:
                continue  # another server moved first (folded now); look again next tick
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
