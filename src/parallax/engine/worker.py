"""Worker processes: `parallax worker --store nats://...` on any number of machines.

A worker follows `work/runs` (runs submitted for distributed execution) and, for each open
run, does two things:

- **serves** its work board: claims offered agent attempts (up to `slots` at once across all
  runs), runs them, keeps each claim's lease alive, and reports the result; a claim whose lease
  is lost (another worker took over after a stall) cancels the attempt;
- **coordinates** it when nobody else does: it takes the run's lease (`run/<id>` in the
  `leases` bucket), fences the run's control stream with the lease's token, and runs the
  runner with a `RemoteExecutor`, renewing the lease as it goes. A coordinator that dies stops
  renewing; after the TTL another worker takes the lease, fences the stream, and resumes the
  run from its log. A coordinator that was only paused finds itself fenced off on its next
  append (or on its next renewal) and stops.

Runs with task graphs are served too: the worker claims tasks on the run's board like
`parallax worker RUN` does (it needs the repository at the same path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallax.agents import build_agent
from parallax.agents.base import AgentLog, BudgetView
from parallax.agents.process import agent_environment
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, Fenced, StoreUnavailable
from parallax.core.events import Event
from parallax.core.plan import Step
from parallax.core.state import RunState
from parallax.core.work import Offer
from parallax.engine.api import load_run
from parallax.engine.attempt import AttemptInput, run_attempt
from parallax.engine.control import agent_stream
from parallax.engine.integration import task_graph_of
from parallax.engine.lease import Lease, Leases
from parallax.engine.runner import Runner, RunOptions
from parallax.engine.tasks import TaskRunOptions, run_worker
from parallax.engine.work import RUNS_STREAM, RemoteExecutor, WorkClient, failure_result
from parallax.settings import HooksConfig
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record, record_event

log = logging.getLogger("parallax.worker")


def worker_name() -> str:
    return f"{socket.gethostname()[:12]}-{os.getpid()}-{secrets.token_hex(2)}"


async def announce(store: StreamStore, kind: str, run_id: str) -> None:
    """Append `run.submitted` or `run.closed` for `run_id` to `work/runs`."""
    await store.append(RUNS_STREAM, AppendInput([event_record(Event(kind, {"run": run_id}))]))


@dataclass
class WorkerOptions:
    slots: int = 4  # agent attempts at once, across runs
    coordinate: bool = True  # take the coordinator role of runs nobody coordinates
    lease_s: float = 10.0  # coordinator lease TTL
    claim_lease_s: float = 15.0  # how long a claimed attempt survives without renewal
    workdir: Path | None = None
    parent_env: Mapping[str, str] | None = None
    runs: tuple[str, ...] = ()  # only these runs (default: every submitted run)
    hooks: HooksConfig | None = None  # as coordinator: parallax.toml [hooks]
    concurrency: int | None = None  # as coordinator: parallax.toml [limits] concurrency
    tasks: bool = True  # also claim tasks of task graphs (the working directory is the repository)
    exit_when_idle: bool = False  # stop when the given runs are closed, or when nothing is open after work


@dataclass
class WorkerStats:
    ran: int = 0  # attempts this worker ran to a reported end
    tasks: int = 0  # tasks of task graphs this worker ran
    lost: int = 0  # attempts cancelled because the claim's lease was lost
    coordinated: list[str] = field(default_factory=list[str])
    fenced: int = 0


class Worker:
    def __init__(self, store: StreamStore, name: str | None = None, options: WorkerOptions | None = None) -> None:
        self.store = store
        self.name = name or worker_name()
        self.options = options or WorkerOptions()
        self.stats = WorkerStats()
        self.leases = Leases(store)
        self._slots = asyncio.Semaphore(self.options.slots)
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._ended: list[asyncio.Task[None]] = []  # cancelled run loops, awaited before returning
        self._closed: set[str] = set()
        self._states: dict[str, RunState] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> WorkerStats:
        """Serve and coordinate submitted runs until stopped (or idle, with exit_when_idle)."""
        follower = asyncio.create_task(self._follow_runs())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if follower.done():
                follower.result()
        finally:
            follower.cancel()
            stopper.cancel()
            for task in self._runs.values():
                task.cancel()
            await asyncio.gather(follower, stopper, *self._runs.values(), *self._ended, return_exceptions=True)
        return self.stats

    async def _follow_runs(self) -> None:
        while True:
            try:
                await self._follow_runs_once()
                return
            except Exception as e:  # the store is away: follow again from the start (idempotent)
                log.warning("following %s: %s; retrying", RUNS_STREAM, e)
                await asyncio.sleep(0.5)

    async def _follow_runs_once(self) -> None:
        wanted = set(self.options.runs)
        async for record in self.store.tail(RUNS_STREAM, missing_ok=True):
            event = record_event(record)
            if event is None:
                continue
            run_id = str(event.data.get("run", ""))
            if wanted and run_id not in wanted:
                continue
            if event.type == ev.RUN_SUBMITTED and run_id not in self._runs and run_id not in self._closed:
                self._runs[run_id] = asyncio.create_task(self._run_loop(run_id), name=f"run:{run_id}")
            elif event.type == ev.RUN_CLOSED:
                self._closed.add(run_id)
                task = self._runs.pop(run_id, None)
                if task is not None:
                    task.cancel()
                    self._ended.append(task)
            if self.options.exit_when_idle and event.type == ev.RUN_CLOSED and self._idle(wanted):
                return

    def _idle(self, wanted: set[str]) -> bool:
        """The runs asked for are all closed; or, serving every run, nothing is open and this
        worker has done something (replaying runs that closed before it started is not work)."""
        if self._runs:
            return False
        return wanted <= self._closed if wanted else bool(self.stats.ran or self.stats.coordinated or self.stats.tasks)

    async def _run_loop(self, run_id: str) -> None:
        client = WorkClient(self.store, run_id, self.name)
        client.watch()
        tasks = [asyncio.create_task(_persist(lambda: self._serve(client), f"serving {run_id}"))]
        if self.options.tasks:
            tasks.append(asyncio.create_task(_persist(lambda: self._serve_tasks(run_id), f"tasks of {run_id}")))
        if self.options.coordinate:
            tasks.append(asyncio.create_task(_persist(lambda: self._coordinate(run_id), f"coordinating {run_id}")))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    # Serving the work board

    async def _serve(self, client: WorkClient) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._slots.acquire()
                free = 1
                while not self._slots.locked():  # take every free slot: claim that many at once
                    await self._slots.acquire()
                    free += 1
                changed = client.changed
                try:
                    offers = await client.claim(free)
                except BaseException:
                    for _ in range(free):
                        self._slots.release()
                    raise
                for _ in range(free - len(offers)):
                    self._slots.release()
                if not offers:
                    await client.wait_for_change(1.0, changed)
                    continue
                for offer in offers:
                    task = asyncio.create_task(self._execute(client, offer), name=f"offer:{offer.id}")
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _execute(self, client: WorkClient, offer: Offer) -> None:
        try:
            attempt = asyncio.create_task(self._attempt(client.run_id, offer))
            keeper = asyncio.create_task(self._keep_claim(client, offer, attempt))
            try:
                kind, result = await attempt
            except asyncio.CancelledError:
                if keeper.done() and not keeper.result():
                    self.stats.lost += 1
                    return
                raise
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            for _ in range(20):  # the store may be away for a moment: the result is worth retrying
                try:
                    if await client.report(offer, kind, result):
                        self.stats.ran += 1
                    break
                except Exception as e:
                    log.warning("reporting %s: %s; retrying", offer.id, e)
                    await asyncio.sleep(0.5)
        finally:
            self._slots.release()

    async def _keep_claim(self, client: WorkClient, offer: Offer, attempt: asyncio.Task[Any]) -> bool:
        """Renew the claim every third of its lease; cancel the attempt if it is lost or withdrawn."""
        while True:
            await asyncio.sleep(offer.lease_s / 3)
            current = client.board.offers.get(offer.id)
            if current is None or current.status != "claimed" or current.holder != self.name:
                attempt.cancel()
                return False
            try:
                renewed = await client.renew(offer)
            except Exception as e:  # the store is away: try again; the lease has slack for this
                log.warning("renewing %s: %s", offer.id, e)
                continue
            if not renewed:
                attempt.cancel()
                return False

    async def _state(self, run_id: str, step_id: str) -> RunState:
        state = self._states.get(run_id)
        if state is None or state.plan is None or step_id not in {s.id for s in state.plan.steps}:
            state = self._states[run_id] = await load_run(self.store, run_id)
        return state

    async def _attempt(self, run_id: str, offer: Offer) -> tuple[str, dict[str, Any]]:
        """Run one offered attempt here: (work.done, result) or (work.failed, failure)."""
        state = await self._state(run_id, offer.step)
        assert state.plan is not None
        step: Step = next(s for s in state.plan.steps if s.id == offer.step)
        assert step.agent is not None
        payload = offer.payload
        spec = step.agent if not payload.get("model") else step.agent.model_copy(update={"model": payload["model"]})
        agent = build_agent(spec)
        budget = BudgetView(**(payload.get("budget") or {}))
        agent_log = AgentLog(self.store, agent_stream(run_id, step.id), step.id, step.id)
        request = AttemptInput(
            run_id, state.plan, state.plan_hash, step, offer.attempt, payload.get("prompt"),
            dict(payload.get("input") or {}), budget,
        )  # fmt: skip
        try:
            result = await run_attempt(
                request,
                agent,
                self.store,
                agent_log,
                cancelled=asyncio.Event(),
                env=agent_environment(step.agent.env, self.options.parent_env),
                workdir=self.options.workdir,
            )
        except AgentFailed as e:
            with contextlib.suppress(Exception):
                await agent_log.flush()
            return ev.WORK_FAILED, failure_result(e)
        await agent_log.flush()
        return ev.WORK_DONE, {"output": result.output, "confidence": result.confidence, "usage": result.usage}

    async def _serve_tasks(self, run_id: str) -> None:
        """Claim tasks of the run's task graph once its tasks step has started (in this
        worker's working directory, which must be a clone of the repository at the same path)."""
        while True:
            state = await load_run(self.store, run_id)
            assert state.plan is not None
            step = next((s for s in state.plan.steps if s.kind == "tasks"), None)
            if step is None or state.steps[step.id].done:
                return
            if state.steps[step.id].status == "running":
                break
            await asyncio.sleep(1.0)
        repo = self.options.workdir or Path.cwd()
        if not (repo / ".git").exists():
            log.warning("run %s has a task graph; this worker's directory %s is not its repository", run_id, repo)
            return
        spec, _ = await task_graph_of(self.store, run_id)
        options = TaskRunOptions(repo=repo, parent_env=self.options.parent_env)
        self.stats.tasks += await run_worker(self.store, run_id, f"{self.name}-tasks", spec, options, state.plan.inputs)

    # Coordinating

    async def _coordinate(self, run_id: str) -> None:
        key = f"run/{run_id}"
        ttl = self.options.lease_s
        while True:
            info = await self.leases.info(key)
            if info is None or not info.live() or info.holder == self.name:
                lease = await self.leases.acquire(key, self.name, ttl)
                if lease is not None and await self._lead(run_id, lease):
                    return
            await asyncio.sleep(ttl / 3 + secrets.randbelow(1000) / 1000 * ttl / 10)

    async def _lead(self, run_id: str, lease: Lease) -> bool:
        """Advance the run while holding its lease; True once the run is finished."""
        state = await load_run(self.store, run_id)
        if state.finished:
            await self.leases.release(lease)
            await announce(self.store, ev.RUN_CLOSED, run_id)
            return True
        self.stats.coordinated.append(run_id)
        executor = RemoteExecutor(self.store, run_id, lease_s=self.options.claim_lease_s)
        options = RunOptions(
            coordinator=lease.token, executor=executor, workdir=self.options.workdir,
            parent_env=self.options.parent_env, hooks=self.options.hooks, concurrency=self.options.concurrency,
        )  # fmt: skip
        runner = Runner(self.store, run_id, options)
        task = asyncio.create_task(runner.run(), name=f"coordinate:{run_id}")
        lost = False
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.options.lease_s / 3)
                if not task.done() and not await self.leases.renew(lease, self.options.lease_s):
                    log.warning("lost the lease on %s; stopping", run_id)
                    self.stats.fenced += 1
                    lost = True
                    task.cancel()
            if lost:  # renewal refused: another worker holds the lease (and has fenced the log)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return False
            try:
                final = await task
            except Fenced:  # another coordinator fenced the control stream first
                self.stats.fenced += 1
                return False
            except StoreUnavailable:
                # The store was away long enough for the coordinator to stop (a paused process,
                # a restarting server). If another worker took the run over meanwhile, this one
                # was fenced off; either way the run is as its log says, and is taken up again.
                info = await self.leases.info(f"run/{run_id}")
                if info is not None and info.holder != self.name:
                    self.stats.fenced += 1
                return False
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await executor.close()
        if final.finished:
            await announce(self.store, ev.RUN_CLOSED, run_id)
            await self.leases.release(lease)
            return True
        return False


async def _persist(loop: Callable[[], Awaitable[None]], what: str) -> None:
    """Run a worker loop until it returns, restarting it when the store fails under it."""
    while True:
        try:
            await loop()
            return
        except Exception as e:
            log.warning("%s: %s; restarting", what, e)
            await asyncio.sleep(0.5)


async def submit(store: StreamStore, run_id: str) -> None:
    """Offer a created run to the workers (they pick a coordinator among themselves)."""
    await load_run(store, run_id)  # raises RunNotFound for a run that was never created
    await announce(store, ev.RUN_SUBMITTED, run_id)
