"""Step kinds, each in its own module behind a narrow `StepContext`; the runner looks a step's
kind up here and only schedules. Agent steps (`steps.agent.AgentSteps`) hold the run's data
plane, so the runner makes one per run and adds it to this table as "agent"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from parallax.core.plan import Step
from parallax.engine.steps.context import StepContext
from parallax.engine.steps.control import run_control
from parallax.engine.steps.gate import run_gate
from parallax.engine.steps.merge import run_merge
from parallax.engine.steps.subrun import run_subrun
from parallax.engine.steps.tasks import run_tasks_step

StepKind = Callable[[StepContext, Step], Awaitable[None]]

STEP_KINDS: dict[str, StepKind] = {
    "merge": run_merge,
    "gate": run_gate,
    "control": run_control,
    "subrun": run_subrun,
    "tasks": run_tasks_step,
}

__all__ = ["STEP_KINDS", "StepContext", "StepKind"]
