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
import traceback
from typing import Any

from parallax import telemetry
from parallax.core import events as ev
from parallax.core.errors import (
    Fenced,
    PlanError,
    RunNotFound,
    StoreUnavailable,
)
from parallax.core.events import Event
from parallax.core.plan import Plan, Step
from parallax.core.state import RunState
from parallax.engine.control import ControlLog
from parallax.engine.heap import frozen_heap
from parallax.engine.heartbeat import beat
from parallax.engine.hooks import Hooks
from parallax.engine.listing import planned_steps
from parallax.engine.options import RunOptions as RunOptions
from parallax.engine.runs import create_run, load_run
from parallax.engine.steps import STEP_KINDS, StepKind
from parallax.engine.steps.agent import AgentSteps
from parallax.streams.base import StreamStore


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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._remaining: dict[str, int] = {}
        self._cancelled = asyncio.Event()
        self._all_done = asyncio.Event()
        self._fatal: BaseException | None = None
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
        # Freeze before the log is folded when run.created says the plan is large: folding
        # builds most of the run's heap, and a full collection in the middle of it walks it all.
        with frozen_heap(await planned_steps(self.store, self.log.stream)):
            return await self._load_and_schedule()

    async def _load_and_schedule(self) -> RunState:
        state = await self.log.load()
        if state.plan is None:
            raise PlanError(f"run {self.run_id} has no run.created event on its control stream")
        if state.finished:
            return state
        await self.log.take_over(self.options.coordinator)
        await self.log.emit(ev.RunResumed(self.options.coordinator).event())
        plan = self.plan
        self._kinds: dict[str, StepKind] = {**STEP_KINDS, "agent": AgentSteps(self, self._cancelled)}
        self._dependents = plan.dependents()
        self._steps = {s.id: s for s in plan.steps}
        self._remaining = {s.id: sum(1 for d in s.after if not self.state.steps[d].done) for s in plan.steps}
        self._plan_seen = plan
        with frozen_heap(len(plan.steps)):
            await self._schedule()
        return self.state

    async def _schedule(self) -> None:
        plan = self.plan
        watcher = asyncio.create_task(self._watch_control())
        pulse = asyncio.create_task(beat(self.store, self.run_id, self.options.coordinator, self.options.heartbeat_s))
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
            pulse.cancel()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(watcher, pulse, *self._tasks.values(), return_exceptions=True)
            await self.log.close()
            if self.hooks is not None:
                await self.hooks.drain()

    # Scheduling

    def _start(self, step_id: str) -> None:
        if step_id in self._tasks:
            return
        self._tasks[step_id] = asyncio.create_task(self._run_step(step_id), name=f"step:{step_id}")

    async def _run_step(self, step_id: str) -> None:
        step = self._steps[step_id]
        if not telemetry.enabled():
            await self._run_step_body(step, step_id)
            return
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
            await self._kinds[step.kind](self, step)
        except asyncio.CancelledError:
            return
        except (Fenced, StoreUnavailable) as e:
            # Fenced: another coordinator took over. Store unavailable: nothing is wrong with
            # the step; stop coordinating and leave the run as the log has it, to be resumed
            # (a worker takes it up again; see engine.worker).
            self._abort(e)
            return
        except Exception as e:  # a bug or a store failure: record it against the step, then stop
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            try:
                await self.log.emit(ev.StepFailed(f"internal error: {detail}").event(step_id))
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
        succeeded = sum(1 for s in state.steps.values() if s.status == "succeeded")
        finished = ev.RunFinished(
            status, done, len(sinks) == 1, state.usage.as_dict(), len(state.conflicts),
            steps=len(state.steps), succeeded=succeeded,
        )  # fmt: skip
        await self.log.emit(finished.event())

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
