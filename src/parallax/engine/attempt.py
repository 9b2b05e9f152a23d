"""One attempt of an agent step: build the context, run the agent under its timeout, check
and type its output, run its verify command. Written as a free function so that the process
that runs it need not be the one coordinating the run (see `engine.work`)."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from parallax import telemetry
from parallax.agents.base import Agent, AgentContext, AgentLog, AgentResult, BudgetView
from parallax.agents.process import run_process
from parallax.agents.refs import resolve_model
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, AgentTimeout, InvalidOutput
from parallax.core.expand import cohort_stream
from parallax.core.grants import Grants
from parallax.core.plan import Plan, Step
from parallax.core.state import RunState
from parallax.engine.control import agent_stream
from parallax.streams.base import StreamStore


class Executor(Protocol):
    """Runs an agent attempt on the coordinator's behalf and returns its result, or raises
    the AgentFailed the attempt ended with. `state` is the run as the coordinator folds it
    (live: it changes while the attempt runs)."""

    async def run(
        self,
        state: RunState,
        step: Step,
        attempt: int,
        prompt: str | None,
        agent_input: dict[str, Any],
        budget: BudgetView,
    ) -> AgentResult: ...


@dataclass(frozen=True)
class AttemptInput:
    run_id: str
    plan: Plan
    plan_hash: str
    step: Step
    attempt: int
    prompt: str | None
    agent_input: dict[str, Any]
    budget: BudgetView


def grants_for(run_id: str, step: Step) -> Grants:
    """What a step's agent may read and write: its own stream; its inputs' streams, the streams
    it declares, and its cohort's."""
    own = agent_stream(run_id, step.id)
    reads = [agent_stream(run_id, dep) for dep in step.after]
    reads += [entry.replace("{run}", run_id) for entry in step.reads]
    if step.cohort:
        reads.append(cohort_stream(run_id, step.cohort))
    return Grants(agent=step.id, write=(own,), read=tuple(reads))


async def run_attempt(
    request: AttemptInput,
    agent: Agent,
    store: StreamStore,
    log: AgentLog,
    *,
    cancelled: asyncio.Event,
    env: Mapping[str, str],
    workdir: Path | None,
) -> AgentResult:
    step = request.step
    assert step.agent is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + step.timeout_s if step.timeout_s else None
    output_type = resolve_model(step.output, request.plan, request.plan_hash) if step.output else None
    ctx = AgentContext(
        run_id=request.run_id,
        step_id=step.id,
        agent=step.agent_name,
        attempt=request.attempt,
        input=request.agent_input,
        prompt=request.prompt,
        output_type=output_type,
        grants=grants_for(request.run_id, step),
        store=store,
        log=log,
        budget=request.budget,
        deadline=deadline,
        cancelled=cancelled,
        env=dict(env),
        workdir=workdir,
    )
    if not telemetry.enabled():
        return await _checked(step, ctx, output_type, await _run_agent(agent, ctx, step))
    model_name = step.agent.model if step.agent.kind in ("llm", "coder") else None
    name = f"chat {model_name}" if model_name else f"parallax.agent {step.agent.kind}"
    attributes = {
        "parallax.run_id": request.run_id, "parallax.step": step.id, "parallax.agent.kind": step.agent.kind,
        "parallax.attempt": request.attempt, "parallax.stream": agent_stream(request.run_id, step.id),
        **(telemetry.gen_ai_attributes(model_name, None) if model_name else {}),
    }  # fmt: skip
    with telemetry.span(name, attributes) as current:
        result = await _run_agent(agent, ctx, step)
        if model_name:
            usage = telemetry.gen_ai_attributes(model_name, result.usage)
            current.set_attributes({k: v for k, v in usage.items() if v is not None})
        elif result.usage:
            current.set_attribute("parallax.cost_usd", result.usage.get("cost_usd"))
    return await _checked(step, ctx, output_type, result)


async def _run_agent(agent: Agent, ctx: AgentContext, step: Step) -> AgentResult:
    """The agent's run under the step's timeout; whatever else it raises is its failure."""
    try:
        if step.timeout_s is None:
            return await agent.run(ctx)
        async with asyncio.timeout(step.timeout_s):
            return await agent.run(ctx)
    except TimeoutError:
        raise AgentTimeout(f"step {step.id} ran past its timeout of {step.timeout_s:g}s") from None
    except AgentFailed:
        raise
    except Exception as e:
        # The agent itself raised: a bug in it, or a failure it did not classify.
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        raise AgentFailed(f"agent {step.id} raised {detail}", retryable=False) from e


async def _checked(
    step: Step, ctx: AgentContext, output_type: type[BaseModel] | None, result: AgentResult
) -> AgentResult:
    """The result typed by the step's output model, its own confidence taken, verified."""
    if output_type is not None:
        model = result.model
        if type(model) is not output_type:  # the agent handed back its own model: no second validation
            try:
                model = output_type.model_validate(result.output)
            except ValidationError as e:
                raise InvalidOutput(f"step {step.id}: output does not fit {step.output}: {e}") from e
            result = AgentResult(model.model_dump(mode="json"), result.confidence, result.usage, model)
        if result.confidence is None and "confidence" in output_type.model_fields:
            own = getattr(model, "confidence", None)
            if isinstance(own, int | float):
                result = AgentResult(result.output, float(own), result.usage, model)
    elif result.confidence is None and isinstance(result.output, dict):
        own = result.output.get("confidence")  # an untyped answer may still say how sure it is
        if isinstance(own, int | float) and not isinstance(own, bool) and 0.0 <= own <= 1.0:
            result = AgentResult(result.output, float(own), result.usage, result.model)
    if step.verify:
        result = await _verify(step, ctx, result)
    return result


async def _verify(step: Step, ctx: AgentContext, result: AgentResult) -> AgentResult:
    """Run the step's verify command (stdin: the output as JSON): exit 0 sets confidence 1.0,
    anything else 0.0. Its output goes to the agent's stream."""
    assert step.verify is not None
    outcome = await run_process(
        ["/bin/sh", "-c", step.verify],
        stdin=json.dumps(result.output, default=str).encode(),
        env=ctx.env,
        cwd=ctx.workdir,
        timeout_s=ctx.time_left() or 600.0,
        on_stdout_line=lambda line: ctx.log(ev.AGENT_LOG, {"verify": line}),
        on_stderr_line=lambda line: ctx.log(ev.AGENT_LOG, {"verify_stderr": line}),
    )
    confidence = 1.0 if outcome.returncode == 0 else 0.0
    ctx.log(ev.AGENT_LOG, {"verify_exit": outcome.returncode, "confidence": confidence})
    return AgentResult(result.output, confidence, result.usage)
