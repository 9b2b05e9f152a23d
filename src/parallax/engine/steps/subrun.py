"""Sub-run steps: a breakout (or any nested plan) run as run `<run>.<step>` on its own streams,
resumed rather than restarted after a crash; its result is the step's output."""

from __future__ import annotations

from parallax.core import events as ev
from parallax.core.plan import Plan, Step
from parallax.core.template import render
from parallax.engine.steps.context import StepContext


async def run_subrun(ctx: StepContext, step: Step) -> None:
    """Run `step.subrun.plan` as run `<run>.<step>` (resuming it if a crash left it half done)
    and record its result as this step's output."""
    assert step.subrun is not None
    context = ctx.context_for(step)
    inputs = {k: render(v, context) if isinstance(v, str) else v for k, v in step.subrun.inputs.items()}
    plan = Plan.model_validate(step.subrun.plan)
    plan = plan.model_copy(update={"inputs": {**plan.inputs, **inputs}}).revalidated()
    child = f"{ctx.run_id}.{step.id}"
    await ctx.emit(ev.StepStarted(1, "subrun", child).event(step.id))
    state = await ctx.run_child(child, plan, f"breakout of {ctx.run_id}/{step.id}")
    if state.status == "succeeded":
        output = {"run": child, "result": state.result, "conflicts": len(state.conflicts)}
        await ctx.emit(ev.StepOutput(output, usage=state.usage.as_dict(), attempt=1).event(step.id))
    else:
        error = f"sub-run {child} ended {state.status}"
        await ctx.emit(ev.StepFailed(error, usage=state.usage.as_dict()).event(step.id))
