"""Gate steps: a person's approval, or a check of the inputs."""

from __future__ import annotations

import asyncio
import time

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import Step
from parallax.engine.steps.context import StepContext


async def run_gate(ctx: StepContext, step: Step) -> None:
    """Approval gates wait (durably, across resumes) for a decision appended by anyone;
    check gates pass only when their inputs succeeded without conflicts and confidently enough."""
    assert step.gate is not None
    gate = step.gate
    if gate.kind == "check":
        await _check_gate(ctx, step)
        return
    if ctx.state.steps[step.id].status != "waiting":
        await ctx.emit(Event(ev.GATE_WAITING, {"prompt": gate.prompt or step.id}, step=step.id))
    # The timeout counts from when the gate started waiting (on the log), across resumes.
    waiting_since = (ctx.state.steps[step.id].started_at or time.time_ns() // 1_000_000) / 1000
    deadline = None if gate.timeout_s is None else waiting_since + gate.timeout_s
    while step.id not in ctx.state.gate_decisions:
        ctx.foreign.clear()
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            async with asyncio.timeout(timeout):
                await ctx.foreign.wait()
        except TimeoutError:
            approved = gate.on_timeout == "approve"
            await ctx.emit(
                Event(
                    ev.GATE_DECIDED,
                    {"approved": approved, "by": "timeout", "note": f"no decision in {gate.timeout_s:g}s"},
                    step=step.id,
                )
            )
    decision = ctx.state.gate_decisions[step.id]
    if decision.approved:
        output = {"approved": True, "by": decision.by, "note": decision.note}
        await ctx.emit(Event(ev.STEP_OUTPUT, {"output": output, "attempt": 1}, step=step.id))
    else:
        error = f"rejected by {decision.by}" + (f": {decision.note}" if decision.note else "")
        await ctx.emit(Event(ev.STEP_FAILED, {"error": error, "final": True}, step=step.id))


async def _check_gate(ctx: StepContext, step: Step) -> None:
    assert step.gate is not None
    gate = step.gate
    problems: list[str] = []
    for dep in step.after:
        dep_state = ctx.state.steps[dep]
        if dep_state.status != "succeeded":
            problems.append(f"{dep} {dep_state.status}")
            continue
        if gate.min_confidence is not None and (dep_state.confidence or 0.0) < gate.min_confidence:
            problems.append(f"{dep} confidence {dep_state.confidence} < {gate.min_confidence}")
    if not gate.allow_conflicts:
        found = [c for c in ctx.state.conflicts if c.step in step.after]
        if found:
            problems.append(f"{len(found)} unresolved conflict(s)")
    if problems:
        await ctx.emit(
            Event(ev.STEP_FAILED, {"error": "check failed: " + "; ".join(problems), "final": True}, step=step.id)
        )
    else:
        await ctx.emit(Event(ev.STEP_OUTPUT, {"output": {"passed": True}, "attempt": 1}, step=step.id))
