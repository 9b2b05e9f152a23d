"""Agent steps: prepare the attempt (inputs, prompt, a post that survived a crash), run it
attempt by attempt through the data plane's wrappers (`engine.wrappers`), and record each
attempt's outcome on the control log: retry with backoff, escalate to a stronger model, or
record the output (published to the step's cohort first, when it has one).

Guarantees (see `engine.runner`): the attempt's `step.started` is durable before the agent
runs; its output is recorded once; a step whose inputs did not all succeed is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from parallax.agents import build_agent
from parallax.agents.base import Agent, AgentLog, AgentResult
from parallax.agents.process import agent_environment
from parallax.agents.refs import resolve_model
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, TemplateError
from parallax.core.events import Event
from parallax.core.plan import Step
from parallax.core.runstreams import RunStreams
from parallax.core.template import render
from parallax.engine.attempt import AttemptInput, grants_for, run_attempt
from parallax.engine.cohorts import find_published, publish, stream_context
from parallax.engine.dataplane import CircuitBreaker, CircuitState, RateLimits, ResultCache, backoff_delay, cache_key
from parallax.engine.steps.context import StepContext
from parallax.engine.wrappers import (
    Attempt,
    BudgetSpent,
    Wrapper,
    breaker_slot,
    budget_gate,
    cached,
    compose,
    confidence_checked,
    escalation,
    rate_limited,
)
from parallax.streams.base import AppendInput
from parallax.streams.folded import event_record


class AgentSteps:
    """The agent step kind of one run, with the data plane its attempts share: concurrency
    slots, a circuit breaker per provider, request and token buckets, the result cache, and
    the agents built so far (steps with the same spec share one)."""

    def __init__(self, ctx: StepContext, cancelled: asyncio.Event) -> None:
        plan = ctx.plan
        options = ctx.options
        self.ctx = ctx
        self.cancelled = cancelled
        self.slots = asyncio.Semaphore(options.concurrency or plan.concurrency)
        self.limits = RateLimits(plan.limits)
        self.cache = ResultCache(ctx.store, plan.cache_min_confidence) if options.use_cache else None
        self.breakers: dict[str, CircuitBreaker] = {}
        self._agents: dict[tuple[object, ...], Agent] = {}
        self._envs: dict[tuple[str, ...], dict[str, str]] = {}

    async def __call__(self, ctx: StepContext, step: Step) -> None:
        assert step.agent is not None
        step = self._with_chosen_model(step)
        failed_inputs = [d for d in step.after if ctx.state.steps[d].status != "succeeded"]
        if failed_inputs:
            reason = f"input {', '.join(failed_inputs)} did not succeed"
            await ctx.emit(ev.StepSkipped(reason).event(step.id))
            return
        published_to = step.publish.replace("{run}", ctx.run_id) if step.publish else None
        idem = f"{ctx.run_id}/{step.id}"
        if published_to is not None:
            posted = await find_published(ctx.store, published_to, idem)
            if posted is not None:  # posted before a crash, output not yet recorded: record it now
                output = ev.StepOutput(
                    posted.data.get("output"),
                    posted.data.get("confidence"),
                    attempt=ctx.state.steps[step.id].attempts,
                    recovered=True,
                )
                await ctx.emit(output.event(step.id, step.agent_name))
                return
        context = ctx.context_for(step)
        if step.cohort or step.reads:
            context.update(await stream_context(ctx.store, grants_for(ctx.run_id, step), ctx.run_id, step))
        try:
            prompt = render(step.prompt, context) if step.prompt else None
        except TemplateError as e:
            await ctx.emit(ev.StepFailed(f"prompt: {e}").event(step.id))
            return
        agent_input = {"input": context["input"], "upstream": {k: v["output"] for k, v in context["steps"].items()}}
        if step.output:  # a bad reference fails the step before anything runs
            resolve_model(step.output, ctx.plan, ctx.state.plan_hash)
        call = compose(self.wrappers(step, prompt, agent_input), self._attempt)
        state = ctx.state.steps[step.id]
        agent = self._agent(step, state.escalated_model)
        number = state.attempts
        base = state.escalated_at  # attempts before an escalation do not count against the new model
        while True:
            number += 1
            try:
                result = await call(Attempt(step, number, agent, prompt, agent_input))
            except BudgetSpent:
                return
            except AgentFailed as e:
                final = not e.retryable or number - base >= step.retry.max_attempts
                model = escalation(step, e, final, ctx.state.steps[step.id].escalated_model)
                # escalating: this attempt failed, the step goes on with the stronger model
                failed = ev.StepFailed(str(e), final and model is None, number, type(e).__name__, dict(e.usage or {}))
                if model is not None:
                    await ctx.emit(failed.event(step.id, step.id), ev.StepEscalated(model, number).event(step.id))
                    agent = self._agent(step, model)
                    base = number
                    continue
                if final:
                    await ctx.emit(failed.event(step.id, step.id))
                    return
                delay = max(backoff_delay(step.retry, number), e.retry_after or 0.0)
                await ctx.emit(failed.event(step.id, step.id), ev.StepRetry(number + 1, delay).event(step.id))
                await asyncio.sleep(delay)  # the retry policy's backoff, not a synchronisation
                continue
            await self._record(step, result, 0 if result.cached else number, published_to, idem)
            return

    def _with_chosen_model(self, step: Step) -> Step:
        """The step on the model `--model` chose for it when resuming or forking (llm and
        coder agents only), else as planned."""
        choice, spec = self.ctx.options.models, step.agent
        if choice is None or spec is None or spec.kind not in ("llm", "coder"):
            return step
        names = (step.agent_name, step.id)
        model = next((choice.by_role[n] for n in names if n in choice.by_role), None) or choice.flag
        if not model or model == spec.model:
            return step
        return step.model_copy(update={"agent": spec.model_copy(update={"model": model})})

    def wrappers(self, step: Step, prompt: str | None, agent_input: dict[str, Any]) -> list[Wrapper]:
        """The data plane around this step's attempts, outermost first; a wrapper with nothing
        to do for this run (no budget, no limits, no cache) is left out."""
        assert step.agent is not None
        plan = self.ctx.plan
        out: list[Wrapper] = []
        use_cache = step.agent.cache if step.agent.cache is not None else step.agent.cached_by_default
        if self.cache is not None and use_cache:
            out.append(cached(self.cache, cache_key(step.agent, step.output, prompt, agent_input)))
        if plan.budget.max_tokens is not None or plan.budget.max_cost_usd is not None:
            out.append(budget_gate(plan.budget, lambda: self.ctx.state.usage, self._budget_spent))
        out.append(breaker_slot(self._breaker(step.agent.provider), self.slots))
        out.append(confidence_checked)
        if not self.limits.unlimited:
            out.append(rate_limited(self.limits))
        return out

    async def _attempt(self, attempt: Attempt) -> AgentResult:
        """The attempt itself: `step.started` made durable, then the agent run here (or by a
        worker, in distributed mode), its stream flushed."""
        ctx, step = self.ctx, attempt.step
        assert step.agent is not None
        chosen = step.agent.model if ctx.options.models is not None else None  # --model on resume/fork
        await ctx.emit(ev.StepStarted(attempt.number, step.agent.kind, model=chosen).event(step.id, step.id))
        executor = ctx.options.executor
        if executor is not None:  # another process runs it (distributed mode)
            return await executor.run(
                ctx.state, step, attempt.number, attempt.prompt, attempt.agent_input, attempt.budget
            )
        assert attempt.agent is not None
        log = AgentLog(ctx.store, RunStreams(ctx.run_id).agent(step.id), step.id, step.id)
        request = AttemptInput(
            ctx.run_id, ctx.plan, ctx.state.plan_hash, step, attempt.number, attempt.prompt, attempt.agent_input,
            attempt.budget,
        )  # fmt: skip
        try:
            result = await run_attempt(
                request,
                attempt.agent,
                ctx.store,
                log,
                cancelled=self.cancelled,
                env=self._environment(step.agent.env),
                workdir=ctx.options.workdir,
            )
        except AgentFailed:
            with contextlib.suppress(Exception):  # keep what the agent wrote; the failure is the news
                await log.flush()
            raise
        await log.flush()
        return result

    async def _record(self, step: Step, result: AgentResult, attempt: int, published_to: str | None, idem: str) -> None:
        ctx = self.ctx
        assert step.agent is not None
        if published_to is not None and not result.cached:
            message = {"from": step.agent_name, "step": step.id, "round": step.input.get("round"),
                       "output": result.output, "confidence": result.confidence}  # fmt: skip
            await publish(ctx.store, published_to, Event(ev.COHORT_MESSAGE, message, idem=idem))
        output = ev.StepOutput(result.output, result.confidence, result.usage, attempt, cached=result.cached)
        await ctx.emit(output.event(step.id, step.id))
        if result.confidence is not None and not result.cached:
            await self._track_confidence(step, result.confidence, attempt)

    async def _track_confidence(self, step: Step, confidence: float, attempt: int) -> None:
        """Each agent's confidence history, across runs: `confidence/<agent>` (see `parallax agents`)."""
        assert step.agent is not None
        ctx = self.ctx
        model = ctx.state.steps[step.id].escalated_model or step.agent.model or step.agent.kind
        entry = {"run": ctx.run_id, "step": step.id, "confidence": confidence, "model": model, "attempt": attempt}
        event = Event("agent.confidence", entry, step=step.id, agent=step.agent_name)
        await ctx.store.append(f"confidence/{step.agent_name}", AppendInput([event_record(event)]))

    async def _budget_spent(self, step: Step, reason: str) -> None:
        events = [] if self.ctx.state.budget_exhausted else [ev.BudgetExhausted(reason).event()]
        events.append(ev.StepSkipped(f"budget exhausted ({reason})").event(step.id))
        await self.ctx.emit(*events)

    def _breaker(self, provider: str) -> CircuitBreaker:
        breaker = self.breakers.get(provider)
        if breaker is None:
            limits = self.ctx.plan.limits

            async def record(name: str, circuit: CircuitState) -> None:
                await self.ctx.emit(ev.CircuitChanged(name, circuit).event())

            breaker = self.breakers[provider] = CircuitBreaker(
                provider, limits.breaker_failures, limits.breaker_cooldown_s, record
            )
        return breaker

    def _agent(self, step: Step, escalated_to: str | None) -> Agent | None:
        """The agent that runs the step here (on `escalated_to` once escalated), or None when
        workers run attempts (they build their own: the coordinator need not have its code)."""
        assert step.agent is not None
        if self.ctx.options.executor is not None:
            return None
        if escalated_to is not None:
            return build_agent(step.agent.model_copy(update={"model": escalated_to}))
        spec = step.agent
        # Steps with the same spec share one agent object (and its resolved callable or model).
        key = (spec.kind, spec.model, spec.base_url, spec.ref, spec.command, spec.preset, spec.instructions, spec.env)
        agent = self._agents.get(key) if not spec.settings else None
        if agent is None:
            agent = build_agent(spec)
            if not spec.settings:
                self._agents[key] = agent
        return agent

    def _environment(self, granted: tuple[str, ...]) -> dict[str, str]:
        env = self._envs.get(granted)
        if env is None:
            env = self._envs[granted] = agent_environment(granted, self.ctx.options.parent_env)
        return env
