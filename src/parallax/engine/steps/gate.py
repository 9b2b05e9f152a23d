"""Gate steps: a person's approval, or a check of the inputs."""

from __future__ import annotations

import asyncio
import time

from parallax.core import events as ev
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
        await ctx.emit(ev.GateWaiting(gate.prompt or step.id).event(step.id))
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
            decided = ev.GateDecided(approved, "timeout", f"no decision in {gate.timeout_s:g}s")
            await ctx.emit(decided.event(step.id))
    decision = ctx.state.gate_decisions[step.id]
    if decision.approved:
        output = {"approved": True, "by": decision.by, "note": decision.note}
        await ctx.emit(ev.StepOutput(output, attempt=1).event(step.id))
    else:
        error = f"rejected by {decision.by}" + (f": {decision.note}" if decision.note else "")
        await ctx.emit(ev.StepFailed(error).event(step.id))


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
        await ctx.emit(ev.StepFailed("check failed: " + "; ".join(problems)).event(step.id))
    else:
        await ctx.emit(ev.StepOutput({"passed": True}, attempt=1).event(step.id))
