"""A run's control stream written by hand, for testing the pure parts (the fold, the controllers)
without a store or an engine: events get consecutive positions as if read back from a stream,
and a controller's decision is recorded the way the engine records it (`steps.added`, conflicts,
divergence, then the output)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.expansion import Expansion
from parallax.core.plan import Plan, Step
from parallax.core.state import RunState, fold


def created(plan: Plan, run_id: str = "r", **extra: Any) -> Event:
    data = {"run_id": run_id, "plan": plan.model_dump(mode="json", by_alias=True), "plan_hash": plan.content_hash()}
    return Event(ev.RUN_CREATED, {**data, **extra})


def on_log(*events: Event, start: int = 0) -> list[Event]:
    """The events as read back from a stream: positions start, start+1, ...; timestamps 1000 + position."""
    return [dataclasses.replace(e, seq_num=start + i, timestamp=1000 + start + i) for i, e in enumerate(events)]


def output(step: str, value: Any, **data: Any) -> Event:
    return Event(ev.STEP_OUTPUT, {"output": value, **data}, step=step)


def failed(step: str, error: str = "boom") -> Event:
    return Event(ev.STEP_FAILED, {"error": error, "final": True}, step=step)


class RunLog:
    """A run created from `plan`, its state folded from everything appended so far."""

    def __init__(self, plan: Plan) -> None:
        self.state = fold(on_log(created(plan)))

    def append(self, *events: Event) -> RunState:
        return fold(on_log(*events, start=self.state.next_seq), self.state)

    def step(self, step_id: str) -> Step:
        assert self.state.plan is not None
        return self.state.plan.step(step_id)

    def decide(self, step_id: str, controller: Callable[[Step, RunState], Expansion]) -> Expansion:
        """Run the control step's controller on the state, and record its decision."""
        out = controller(self.step(step_id), self.state)
        if out.error is not None:
            self.append(failed(step_id, out.error))
            return out
        self.append(
            Event(ev.STEPS_ADDED, {
                "steps": [s.model_dump(mode="json", by_alias=True, exclude_defaults=True) for s in out.add],
                "rewire": out.rewire, "session": out.session, "applied": {str(k): v for k, v in out.applied.items()},
            }, step=step_id),
            *(Event(ev.CONFLICT_FOUND, {"conflict": c.model_dump(mode="json")}, step=step_id) for c in out.conflicts),
            output(step_id, out.output, confidence=out.confidence),
        )  # fmt: skip
        return out
