"""The engine: runs a Plan IR as an async DAG, recording everything on the run's streams.

Guarantees:
- A step starts as soon as all its inputs are done (no superstep barrier); at most
  `plan.concurrency` agent attempts run at once.
- Before an agent runs, its `step.started` is durable; its output is recorded once, as
  `step.output`. A step whose output is in the log is never run again, by this process or by
  any later `resume`.
- State is the fold of the control stream (see `ControlLog`); the runner decides from it and
  appends, and never keeps state the log does not have.
- A failed step fails its agent dependents (`step.skipped`); merge steps still run and record
  the failed inputs as gaps. The run succeeds when every sink step (nothing depends on it)
  succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from typing import Any

from parallax import telemetry
from parallax.agents import build_agent
from parallax.agents.base import Agent, AgentLog, AgentResult, BudgetView
from parallax.agents.process import agent_environment
from parallax.agents.refs import resolve_model
from parallax.core import events as ev
from parallax.core.confidence import check_confidence
from parallax.core.errors import (
    AgentFailed,
    Fenced,
    InvalidOutput,
    LowConfidence,
    PlanError,
    RunNotFound,
    TemplateError,
)
from parallax.core.events import Event
from parallax.core.grants import Grants
from parallax.core.plan import Plan, Step
from parallax.core.state import RunState
from parallax.core.template import render
from parallax.engine.attempt import AttemptInput, grants_for, run_attempt
from parallax.engine.cohorts import find_published, publish, stream_context
from parallax.engine.control import ControlLog, agent_stream
from parallax.engine.dataplane import (
    CircuitBreaker,
    CircuitState,
    RateLimits,
    ResultCache,
    backoff_delay,
    cache_key,
    check_budget,
)
from parallax.engine.hooks import Hooks
from parallax.engine.options import RunOptions as RunOptions
from parallax.engine.runs import create_run, load_run
from parallax.engine.steps import STEP_KINDS
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record

_UNLIMITED = BudgetView()


class Runner:
    """Coordinates one run. Use `await Runner(store, run_id).run()` for a run whose control
    stream already holds `run.created` (see `parallax.engine.api`)."""

    def __init__(self, store: StreamStore, run_id: str, options: RunOptions | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.options = options or RunOptions()
        self.hooks = (
            Hooks(store, run_id, self.options.hooks, step_kind=self._step_kind, cwd=self.options.workdir)
            if self.options.hooks is not None
            else None
        )
        self.log = ControlLog(store, run_id, self._observe, snapshots=True, on_folded=self.hooks)
        self._agents: dict[tuple[object, ...], Agent] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._remaining: dict[str, int] = {}
        self._cancelled = asyncio.Event()
        self._all_done = asyncio.Event()
        self._fatal: BaseException | None = None
        self._budget_recorded = False
        self._trace: object = None  # the run span's context: every step span hangs off it

    def _observe(self, event: Event) -> None:
        if self.options.on_event is not None:
            self.options.on_event(event)
        if event.type in (ev.STEPS_ADDED, ev.TOPOLOGY_APPLIED):  # requests carried out (or refused)
            for request, outcome in (event.data.get("applied") or {}).items():
                action = str(self.state.requests.get(int(request), {}).get("action", ""))
                attributes = {"parallax.run_id": self.run_id, "parallax.stream": self.log.stream,
                              "parallax.seq": event.seq_num, "parallax.request_seq": int(request),
                              "parallax.outcome": str(outcome)[:200]}  # fmt: skip
                with telemetry.span(f"parallax.topology {action}".strip(), attributes, parent=self._trace):
                    pass
        if self.hooks is not None:
            self.hooks(event)

    def _step_kind(self, step_id: str) -> str | None:
        plan = self.state.plan
        step = next((s for s in plan.steps if s.id == step_id), None) if plan is not None else None
        return step.kind if step is not None else None

    @property
    def state(self) -> RunState:
        return self.log.state

    @property
    def plan(self) -> Plan:
        assert self.state.plan is not None
        return self.state.plan

    async def run(self) -> RunState:
        attributes = {"parallax.run_id": self.run_id, "parallax.stream": self.log.stream, "parallax.seq": 0}
        with telemetry.span("parallax.run", attributes) as current:
            self._trace = telemetry.current_context()
            state = await self._run()
            current.set_attributes(
                {"parallax.status": state.status, "parallax.plan": state.plan.name if state.plan else None}
            )
            return state

    async def _run(self) -> RunState:
        state = await self.log.load()
        if state.plan is None:
            raise PlanError(f"run {self.run_id} has no run.created event on its control stream")
        if state.finished:
            return state
        await self.log.take_over(self.options.coordinator)
        await self.log.emit(Event(ev.RUN_RESUMED, {"coordinator": self.options.coordinator}))
        plan = self.plan
        self._semaphore = asyncio.Semaphore(self.options.concurrency or plan.concurrency)
        self._limits = RateLimits(plan.limits)
        self._cache = ResultCache(self.store, plan.cache_min_confidence) if self.options.use_cache else None
        self._dependents = plan.dependents()
        self._no_budget = plan.budget.max_tokens is None and plan.budget.max_cost_usd is None
        self._steps = {s.id: s for s in plan.steps}
        self._envs: dict[tuple[str, ...], dict[str, str]] = {}
        self._remaining = {s.id: sum(1 for d in s.after if not self.state.steps[d].done) for s in plan.steps}
        self._plan_seen = plan
        watcher = asyncio.create_task(self._watch_control())
        try:
            for step_id in plan.topological_order():
                if not self.state.steps[step_id].done and self._remaining[step_id] == 0:
                    self._start(step_id)
            if not self._tasks:
                self._all_done.set()
            await self._all_done.wait()
            if self._fatal is not None:
                raise self._fatal
            await self._finish()
        finally:
            watcher.cancel()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(watcher, *self._tasks.values(), return_exceptions=True)
            await self.log.close()
            if self.hooks is not None:
                await self.hooks.drain()
        return self.state

    # Scheduling

    def _start(self, step_id: str) -> None:
        if step_id in self._tasks:
            return
        self._tasks[step_id] = asyncio.create_task(self._run_step(step_id), name=f"step:{step_id}")

    async def _run_step(self, step_id: str) -> None:
        step = self._steps[step_id]
        name = f"parallax.merge {step_id}" if step.kind == "merge" else f"parallax.step {step_id}"
        attributes = {"parallax.run_id": self.run_id, "parallax.step": step_id, "parallax.kind": step.kind,
                      "parallax.stream": self.log.stream}  # fmt: skip
        with telemetry.span(name, attributes, parent=self._trace) as current:
            await self._run_step_body(step, step_id)
            done = self.state.steps.get(step_id)
            if done is not None:
                current.set_attributes({"parallax.status": done.status, "parallax.seq": done.output_seq})

    async def _run_step_body(self, step: Step, step_id: str) -> None:
        try:
            if self._cancelled.is_set():
                return
            if step.kind == "agent":
                await self._agent_step(step)
            else:
                await STEP_KINDS[step.kind](self, step)
        except asyncio.CancelledError:
            return
        except Fenced as e:
            self._abort(e)
            return
        except Exception as e:  # a bug or a store failure: record it against the step, then stop
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            try:
                await self.log.emit(
                    Event(ev.STEP_FAILED, {"error": f"internal error: {detail}", "final": True}, step=step_id)
                )
            except Exception as inner:
                self._abort(inner)
                return
        self._step_finished(step_id)

    def _step_finished(self, step_id: str) -> None:
        self._tasks.pop(step_id, None)
        if self.plan is not self._plan_seen:
            self._refresh_topology()
        else:
            for nxt in self._dependents.get(step_id, ()):
                self._remaining[nxt] -= 1
                if self._remaining[nxt] == 0 and not self.state.steps[nxt].done:
                    self._start(nxt)
        if not self._tasks:
            self._all_done.set()

    def _refresh_topology(self) -> None:
        """A control step grew the plan: take in the new steps and the rewired dependencies,
        then start whatever is ready."""
        plan = self._plan_seen = self.plan
        self._steps = {s.id: s for s in plan.steps}
        self._dependents = plan.dependents()
        steps = self.state.steps
        for spec in plan.steps:
            self._remaining[spec.id] = sum(1 for d in spec.after if not steps[d].done)
        for step_id in plan.topological_order():
            if not steps[step_id].done and self._remaining[step_id] == 0 and step_id not in self._tasks:
                self._start(step_id)

    def _abort(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        self._all_done.set()

    async def _watch_control(self) -> None:
        """Fold what other processes append (cancel requests, gate decisions)."""
        while True:
            await self.store.wait_for_tail(self.log.stream, self.log.tail)
            await asyncio.sleep(0.02)  # our own appends wake this too: fold a burst in one read
            await self.log.sync()
            if self.state.cancel_requested and not self._cancelled.is_set():
                self._cancelled.set()
                for task in list(self._tasks.values()):
                    task.cancel()
                self._all_done.set()

    async def _finish(self) -> None:
        state = self.state
        sinks = self.plan.sinks()
        if self._cancelled.is_set() or state.cancel_requested:
            status = "cancelled"
        elif state.budget_exhausted:
            status = "budget_exhausted"
        elif all(state.steps[s].status == "succeeded" for s in sinks):
            status = "succeeded"
        else:
            status = "failed"
        # The result is the sinks' outputs, already on the log: name them rather than copy them.
        done = [s for s in sinks if state.steps[s].status == "succeeded"]
        await self.log.emit(
            Event(
                ev.RUN_FINISHED,
                {
                    "status": status,
                    "result_steps": done,
                    "single_result": len(sinks) == 1,
                    "usage": state.usage.as_dict(),
                    "conflicts": len(state.conflicts),
                },
            )
        )

    # Inputs, grants, agents

    def _context(self, step: Step) -> dict[str, Any]:
        """What a prompt may refer to: `input.*`, `steps.<id or role>.output`, `upstream` (the
        outputs of the agent and merge steps it follows, in order), `run.id`."""
        steps: dict[str, Any] = {}
        upstream: list[Any] = []
        for dep in step.after:
            dep_state = self.state.steps[dep]
            entry = {"output": dep_state.output, "confidence": dep_state.confidence, "status": dep_state.status}
            steps[dep] = entry
            spec = self._steps[dep]
            if spec.role and spec.role not in steps:
                steps[spec.role] = entry
            if spec.kind in ("agent", "merge", "subrun") and dep_state.status == "succeeded":
                upstream.append(dep_state.output)
        # Earlier steps further up the graph are there too (`steps.draft` after an approval gate).
        stack = [d for dep in step.after for d in self._steps[dep].after]
        while stack:
            ancestor = stack.pop()
            if ancestor in steps:
                continue
            anc_state = self.state.steps[ancestor]
            entry = {"output": anc_state.output, "confidence": anc_state.confidence, "status": anc_state.status}
            steps[ancestor] = entry
            role = self._steps[ancestor].role
            if role and role not in steps:
                steps[role] = entry
            stack.extend(self._steps[ancestor].after)
        return {
            "input": {**self.plan.inputs, **step.input},
            "steps": steps,
            "upstream": upstream,
            "run": {"id": self.run_id},
        }

    def context_for(self, step: Step) -> dict[str, Any]:
        return self._context(step)

    # The step context (parallax.engine.steps.context.StepContext)

    @property
    def foreign(self) -> asyncio.Event:
        return self.log.foreign

    async def emit(self, *events: Event) -> None:
        await self.log.emit(*events)

    async def sync(self) -> list[Event]:
        return await self.log.sync()

    async def run_child(self, child_id: str, plan: Plan, source: str) -> RunState:
        try:
            await load_run(self.store, child_id)
        except RunNotFound:
            await create_run(self.store, plan, run_id=child_id, source=source)
        options = RunOptions(
            concurrency=self.options.concurrency,
            use_cache=self.options.use_cache,
            workdir=self.options.workdir,
            parent_env=self.options.parent_env,
            hooks=self.options.hooks,
        )
        return await Runner(self.store, child_id, options).run()

    def _grants(self, step: Step) -> Grants:
        return grants_for(self.run_id, step)

    def _agent_for(self, step: Step) -> Agent:
        spec = step.agent
        assert spec is not None
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
            env = self._envs[granted] = agent_environment(granted, self.options.parent_env)
        return env

    def _breaker(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            limits = self.plan.limits

            async def record(name: str, circuit: CircuitState) -> None:
                await self.log.emit(Event(ev.CIRCUIT_CHANGED, {"provider": name, "state": circuit}))

            breaker = self._breakers[provider] = CircuitBreaker(
                provider, limits.breaker_failures, limits.breaker_cooldown_s, record
            )
        return breaker

    async def _budget_allows(self, step: Step) -> BudgetView | None:
        if self.plan.budget.max_tokens is None and self.plan.budget.max_cost_usd is None:
            return _UNLIMITED
        check = check_budget(self.plan.budget, self.state.usage)
        if not check.exhausted:
            return BudgetView(check.tokens_left, check.cost_left_usd)
        events = []
        if not self.state.budget_exhausted:
            events.append(Event(ev.BUDGET_EXHAUSTED, {"reason": check.reason}))
        events.append(Event(ev.STEP_SKIPPED, {"reason": f"budget exhausted ({check.reason})"}, step=step.id))
        await self.log.emit(*events)
        return None

    # Agent steps

    async def _agent_step(self, step: Step) -> None:
        assert step.agent is not None
        state = self.state.steps[step.id]
        failed_inputs = [d for d in step.after if self.state.steps[d].status != "succeeded"]
        if failed_inputs:
            reason = f"input {', '.join(failed_inputs)} did not succeed"
            await self.log.emit(Event(ev.STEP_SKIPPED, {"reason": reason}, step=step.id))
            return
        context = self._context(step)
        published_to = step.publish.replace("{run}", self.run_id) if step.publish else None
        idem = f"{self.run_id}/{step.id}"
        if published_to is not None:
            posted = await find_published(self.store, published_to, idem)
            if posted is not None:  # posted before a crash, output not yet recorded: record it now
                await self.log.emit(
                    Event(
                        ev.STEP_OUTPUT,
                        {"output": posted.data.get("output"), "confidence": posted.data.get("confidence"),
                         "attempt": state.attempts, "recovered": True},
                        step=step.id,
                        agent=step.agent_name,
                    )
                )  # fmt: skip
                return
        if step.cohort or step.reads:
            context.update(await stream_context(self.store, self._grants(step), self.run_id, step))
        try:
            prompt = render(step.prompt, context) if step.prompt else None
        except TemplateError as e:
            await self.log.emit(Event(ev.STEP_FAILED, {"error": f"prompt: {e}", "final": True}, step=step.id))
            return
        agent_input = {"input": context["input"], "upstream": {k: v["output"] for k, v in context["steps"].items()}}
        if step.output:
            resolve_model(
                step.output, self.plan, self.state.plan_hash
            )  # a bad reference fails the step before anything runs
        agent = self._agent_for(step)
        use_cache = self._cache is not None and (
            step.agent.cache if step.agent.cache is not None else step.agent.cached_by_default
        )
        key = cache_key(step.agent, step.output, prompt, agent_input) if use_cache else ""
        if self._cache is not None and use_cache:
            hit = await self._cache.get(key)
            if hit is not None:
                await self.log.emit(
                    Event(
                        ev.STEP_OUTPUT,
                        {"output": hit["output"], "confidence": hit["confidence"], "cached": True, "attempt": 0},
                        step=step.id,
                        agent=step.id,
                    )
                )
                return
        if state.escalated_model is not None:
            agent = self._escalated_agent(step, state.escalated_model)
        breaker = self._breaker(step.agent.provider)
        attempt = state.attempts
        base = state.escalated_at  # attempts before an escalation do not count against the new model
        while True:
            attempt += 1
            delay = 0.0
            budget = _UNLIMITED if self._no_budget else await self._budget_allows(step)
            if budget is None:
                return
            while True:  # a slot, with the breaker still letting this call through once we hold it
                is_trial = False if breaker.state == "closed" else await breaker.before_call()
                await self._semaphore.acquire()
                if breaker.admits(is_trial):
                    break
                self._semaphore.release()
            try:
                if not self._limits.unlimited:
                    await self._limits.acquire()
                await self.log.emit(
                    Event(ev.STEP_STARTED, {"attempt": attempt, "kind": step.agent.kind}, step=step.id, agent=step.id)
                )
                log = AgentLog(self.store, agent_stream(self.run_id, step.id), step.id, step.id)
                try:
                    result = await self._attempt(step, agent, log, attempt, context, prompt, agent_input, budget)
                    check_confidence(step.confidence, result.confidence, result.usage)
                except AgentFailed as e:
                    await self._flush_quietly(log)
                    if isinstance(e, InvalidOutput):
                        await breaker.release()
                    else:
                        await breaker.record_failure()
                    final = not e.retryable or attempt - base >= step.retry.max_attempts
                    policy = step.confidence
                    escalate_to = policy.escalate_model if policy is not None else None
                    if (
                        isinstance(e, LowConfidence)
                        and final
                        and e.escalate
                        and escalate_to
                        and self.state.steps[step.id].escalated_model is None
                    ):
                        await self.log.emit(
                            Event(
                                ev.STEP_FAILED,
                                {"attempt": attempt, "error": str(e), "error_type": "LowConfidence", "final": False,
                                 "usage": e.usage or {}},
                                step=step.id,
                                agent=step.id,
                            ),
                            Event(ev.STEP_ESCALATED, {"model": escalate_to, "attempt": attempt}, step=step.id),
                        )  # fmt: skip
                        agent = self._escalated_agent(step, escalate_to)
                        base = attempt
                        continue
                    events = [
                        Event(
                            ev.STEP_FAILED,
                            {
                                "attempt": attempt,
                                "error": str(e),
                                "error_type": type(e).__name__,
                                "final": final,
                                "usage": e.usage or {},
                            },
                            step=step.id,
                            agent=step.id,
                        )
                    ]
                    if not final:
                        delay = max(backoff_delay(step.retry, attempt), e.retry_after or 0.0)
                        events.append(Event(ev.STEP_RETRY, {"attempt": attempt + 1, "delay_s": delay}, step=step.id))
                    await self.log.emit(*events)
                    if final:
                        return
                except asyncio.CancelledError:
                    await breaker.release()
                    raise
                else:
                    if breaker.state != "closed" or breaker.consecutive_failures:
                        await breaker.record_success()
                    if not self._limits.unlimited:
                        self._limits.spent(result.usage)
                    await log.flush()
                    if published_to is not None:
                        message = {
                            "from": step.agent_name,
                            "step": step.id,
                            "round": step.input.get("round"),
                            "output": result.output,
                            "confidence": result.confidence,
                        }
                        await publish(self.store, published_to, Event(ev.COHORT_MESSAGE, message, idem=idem))
                    await self.log.emit(
                        Event(
                            ev.STEP_OUTPUT,
                            {
                                "output": result.output,
                                "confidence": result.confidence,
                                "usage": result.usage,
                                "attempt": attempt,
                            },
                            step=step.id,
                            agent=step.id,
                        )
                    )
                    if self._cache is not None and use_cache:
                        await self._cache.put(key, result.output, result.confidence, result.usage)
                    if result.confidence is not None:
                        await self._track_confidence(step, result.confidence, attempt)
                    return
            finally:
                self._semaphore.release()
            await asyncio.sleep(delay)

    def _escalated_agent(self, step: Step, model: str) -> Agent:
        assert step.agent is not None
        return build_agent(step.agent.model_copy(update={"model": model}))

    async def _track_confidence(self, step: Step, confidence: float, attempt: int) -> None:
        """Each agent's confidence history, across runs: `confidence/<step>` (see `parallax agents`)."""
        assert step.agent is not None
        model = self.state.steps[step.id].escalated_model or step.agent.model or step.agent.kind
        entry = {"run": self.run_id, "step": step.id, "confidence": confidence, "model": model, "attempt": attempt}
        event = Event("agent.confidence", entry, step=step.id, agent=step.agent_name)
        await self.store.append(f"confidence/{step.agent_name}", AppendInput([event_record(event)]))

    async def _flush_quietly(self, log: AgentLog) -> None:
        with contextlib.suppress(Exception):
            await log.flush()

    async def _attempt(
        self,
        step: Step,
        agent: Agent,
        log: AgentLog,
        attempt: int,
        context: dict[str, Any],
        prompt: str | None,
        agent_input: dict[str, Any],
        budget: BudgetView,
    ) -> AgentResult:
        if self.options.executor is not None:  # another process runs it (distributed mode)
            return await self.options.executor.run(self.state, step, attempt, prompt, agent_input, budget)
        assert step.agent is not None
        return await run_attempt(
            AttemptInput(self.run_id, self.plan, self.state.plan_hash, step, attempt, prompt, agent_input, budget),
            agent,
            self.store,
            log,
            cancelled=self._cancelled,
            env=self._environment(step.agent.env),
            workdir=self.options.workdir,
        )
