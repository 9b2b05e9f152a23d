"""What a step kind sees of the run it belongs to: a narrow context, not the runner.

A step kind reads the run's current state and plan, appends events to the control log (`emit`:
durable and folded before it returns), folds what other processes appended (`sync`, `foreign`),
reads the run's options, and may start a child run (`run_child`). It never schedules other
steps: the runner does that.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from parallax.core.events import Event
from parallax.core.plan import Plan, Step
from parallax.core.state import RunState
from parallax.engine.options import RunOptions
from parallax.streams.base import StreamStore


class StepContext(Protocol):
    @property
    def store(self) -> StreamStore: ...

    @property
    def run_id(self) -> str: ...

    @property
    def options(self) -> RunOptions: ...

    @property
    def state(self) -> RunState:
        """The run as folded so far (it changes as events are emitted or folded)."""

    @property
    def plan(self) -> Plan: ...

    @property
    def foreign(self) -> asyncio.Event:
        """Set whenever records another process appended are folded (clear it, then wait)."""

    async def emit(self, *events: Event) -> None:
        """Append events to the control log, in order and atomically, and fold them."""

    async def sync(self) -> list[Event]:
        """Fold what others appended to the control log since the last fold."""

    def context_for(self, step: Step) -> dict[str, Any]:
        """What the step's templates may refer to (`input`, `steps`, `upstream`, `run`)."""

    async def run_child(self, child_id: str, plan: Plan, source: str) -> RunState:
        """Run `plan` as run `child_id` (created the first time, resumed after a crash) with
        this run's options, to its end."""
