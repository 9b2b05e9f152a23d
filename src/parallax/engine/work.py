"""Distributed execution of agent attempts through a run's work board (see `core.work`).

`WorkClient` folds `runs/<run>/work` and appends to it: the coordinator offers, workers claim
(conditional appends at the folded tail), renew and report. `RemoteExecutor` plugs into the
runner (`RunOptions.executor`): instead of running an attempt in-process it offers it and
waits for a worker's result, adopting an offer a crashed coordinator left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from parallax import telemetry
from parallax.agents.base import AgentResult, BudgetView
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, AgentTimeout, InvalidOutput, StreamExists, StreamNotFound
from parallax.core.events import Event
from parallax.core.plan import Step
from parallax.core.runstreams import WORK_RUNS, RunStreams
from parallax.core.state import RunState
from parallax.core.work import Offer, WorkBoard, offer_id
from parallax.streams.base import StreamStore
from parallax.streams.folded import EVENTS, FoldedStream

RUNS_STREAM = WORK_RUNS
COALESCE_S = 0.05  # seconds a watcher waits after a wake-up before it reads (see _watch)
log = logging.getLogger("parallax.work")


_ENDINGS = (ev.WORK_DONE, ev.WORK_FAILED, ev.WORK_WITHDRAWN)


def work_stream(run_id: str) -> str:
    return RunStreams(run_id).work


def now_ms() -> int:
    return int(time.time() * 1000)


class WorkClient:
    """One process's view of a run's work board (a `FoldedStream` over `runs/<run>/work`)."""

    def __init__(self, store: StreamStore, run_id: str, worker: str = "coordinator") -> None:
        self.store = store
        self.run_id = run_id
        self.worker = worker
        self.stream = work_stream(run_id)
        self.board = WorkBoard()
        self.folded = FoldedStream(store, self.stream, self._apply, EVENTS)
        self._waiters: dict[str, asyncio.Future[Offer]] = {}  # offer id -> resolved when it ends
        self._offers: list[tuple[Event, asyncio.Future[None]]] = []
        self._offering: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def _apply(self, event: Event) -> bool:
        accepted = self.board.apply(event)
        self.board.tail = event.seq_num + 1
        if accepted and event.type in _ENDINGS:
            waiter = self._waiters.pop(str(event.data.get("id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(self.board.offers[str(event.data.get("id"))])
        return accepted

    async def sync(self) -> None:
        await self.folded.sync()

    def watch(self) -> None:
        """Fold new records as they are appended (by any process), in the background."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name=f"work-watch:{self.run_id}")

    async def _watch(self) -> None:
        while True:
            try:
                await self.store.wait_for_tail(self.stream, self.folded.tail)
                # Let a burst of records (claims and results from every worker) land, then fold
                # them in one read: every process watching a board reads once per burst, not
                # once per record.
                await asyncio.sleep(COALESCE_S)
                await self.sync()
            except StreamNotFound:
                await asyncio.sleep(0.05)  # nothing offered yet
            except Exception as e:  # the store is away (a server restart): keep watching
                log.warning("work board %s: %s; retrying", self.stream, e)
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher

    async def ended(self, id: str) -> Offer:
        """Wait until offer `id` is done, failed or withdrawn (one future per offer, so a
        coordinator waiting on hundreds of offers is woken once per result, not per record)."""
        offer = self.board.offers.get(id)
        if offer is not None and offer.finished:
            return offer
        waiter = self._waiters.get(id)
        if waiter is None:
            waiter = self._waiters[id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(waiter)

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next fold that sees new records; take it *before* looking at the board."""
        return self.folded.changed

    async def wait_for_change(self, seconds: float, changed: asyncio.Event | None = None) -> None:
        changed = changed or self.folded.changed
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, leaving the caller running after it was cancelled.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()

    async def append(self, event: Event, *, conditional: bool) -> bool | None:
        """Append one event; whether the fold accepted it, or None if the tail moved first
        (conditional appends only: fold and decide again)."""
        accepted = await self.append_all([event], conditional=conditional)
        return None if accepted is None else accepted[0]

    async def append_all(self, events: list[Event], *, conditional: bool) -> list[bool] | None:
        """Append events in one atomic batch; which of them the fold accepted, or None if
        the tail moved first (conditional appends only)."""
        appended = await self.folded.append(events, conditional=conditional)
        return None if appended is None else list(appended.accepted)

    async def append_settled(self, event: Event) -> bool:
        """Append one event at the tail this client folded (re-folding and retrying when another
        process got there first); whether the fold accepted it."""
        while True:
            accepted = await self.append(event, conditional=True)
            if accepted is not None:
                return accepted

    # Coordinator side

    async def offer(self, id: str, step: str, attempt: int, payload: dict[str, Any], lease_s: float) -> None:
        """Offer an attempt. Offers made at the same moment (a fan-out starting) go out together
        in one append."""
        data = {"id": id, "step": step, "attempt": attempt, "payload": payload, "lease_s": lease_s}
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offers.append((Event(ev.WORK_OFFERED, data, step=step), future))
        if self._offering is None or self._offering.done():
            self._offering = asyncio.create_task(self._flush_offers())
        await asyncio.shield(future)

    async def _flush_offers(self) -> None:
        await asyncio.sleep(0)  # let the other steps starting now add theirs
        while self._offers:
            batch, self._offers = self._offers[:1000], self._offers[1000:]
            try:
                while await self.append_all([event for event, _ in batch], conditional=True) is None:
                    pass  # a worker appended first: fold it and append at the new tail
            except Exception as e:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def withdraw(self, id: str) -> None:
        await self.append_settled(Event(ev.WORK_WITHDRAWN, {"id": id}))

    # Worker side

    async def claim(self, most: int = 1) -> list[Offer]:
        """Take up to `most` claimable offers (oldest first) in one append; [] if none is
        claimable right now. Claiming several at once keeps workers from racing per offer."""
        fresh = False
        while True:
            # Decide on the board as folded (the watcher keeps it current); a conditional append
            # that finds the tail moved folds the news and decides again.
            candidates = self.board.claimable(now_ms())[:most]
            if not candidates:
                if fresh:
                    return []
                await self.sync()
                fresh = True
                continue
            events = [
                Event(
                    ev.WORK_CLAIMED,
                    {"id": offer.id, "worker": self.worker, "until_ms": now_ms() + int(offer.lease_s * 1000)},
                    step=offer.step,
                )
                for offer in candidates
            ]
            with telemetry.span(
                "parallax.claim",
                {"parallax.offers": [o.id for o in candidates], "parallax.worker": self.worker,
                 "parallax.stream": self.stream, "parallax.seq": self.folded.tail},
            ) as current:  # fmt: skip
                accepted = await self.append_all(events, conditional=True)
                current.set_attribute("parallax.won", sum(accepted) if accepted else 0)
            if accepted is None:
                continue  # the tail moved: fold and look again
            won = [self.board.offers[o.id] for o, ok in zip(candidates, accepted, strict=True) if ok]
            if won:
                return won

    async def renew(self, offer: Offer) -> bool:
        until = now_ms() + int(offer.lease_s * 1000)
        data = {"id": offer.id, "worker": self.worker, "until_ms": until}
        return await self.append_settled(Event(ev.WORK_RENEWED, data, step=offer.step))

    async def report(self, offer: Offer, kind: str, result: dict[str, Any]) -> bool:
        data = {"id": offer.id, "worker": self.worker, "result": result}
        return await self.append_settled(Event(kind, data, step=offer.step))


def failure_result(error: AgentFailed) -> dict[str, Any]:
    return {
        "error": str(error),
        "error_type": type(error).__name__,
        "retryable": error.retryable,
        "retry_after": error.retry_after,
        "usage": error.usage or {},
    }


def failure_of(result: dict[str, Any]) -> AgentFailed:
    """The AgentFailed a worker reported, rebuilt for the coordinator's retry logic."""
    kinds: dict[str, type[AgentFailed]] = {"AgentTimeout": AgentTimeout, "InvalidOutput": InvalidOutput}
    cls = kinds.get(str(result.get("error_type")), AgentFailed)
    error = cls(str(result.get("error", "failed on a worker")), retryable=result.get("retryable"))
    error.retry_after = result.get("retry_after")
    error.usage = dict(result.get("usage") or {})
    return error


class RemoteExecutor:
    """Offers each attempt on the run's work board and waits for a worker's result."""

    def __init__(self, store: StreamStore, run_id: str, *, lease_s: float = 15.0) -> None:
        self.client = WorkClient(store, run_id)
        self.lease_s = lease_s
        self._started: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        """Fold the board once before any offer (concurrent steps share that first fold, so
        a coordinator that took over sees every offer its predecessor made)."""
        if self._started is None:
            self._started = asyncio.create_task(self._first_fold())
        await asyncio.shield(self._started)

    async def _first_fold(self) -> None:
        with contextlib.suppress(StreamExists):
            await self.client.store.create(self.client.stream)
        await self.client.sync()
        self.client.watch()

    async def run(
        self,
        run: RunState,
        step: Step,
        attempt: int,
        prompt: str | None,
        agent_input: dict[str, Any],
        budget: BudgetView,
    ) -> AgentResult:
        await self._start()
        state = run.steps[step.id]
        id = offer_id(step.id, state.failures)
        if id not in self.client.board.offers:  # else: offered before a takeover; adopt it
            payload = {
                "prompt": prompt,
                "input": agent_input,
                "budget": {"tokens_left": budget.tokens_left, "cost_left_usd": budget.cost_left_usd},
                # escalated, or chosen by --model on resume/fork; the worker uses the plan's otherwise
                "model": state.escalated_model or (step.agent.model if step.agent is not None else None),
            }
            await self.client.offer(id, step.id, attempt, payload, self.lease_s)
        try:
            offer = await self.client.ended(id)
            result = offer.result or {}
            if offer.status == "done":
                return AgentResult(result.get("output"), result.get("confidence"), result.get("usage") or {})
            if offer.status == "failed":
                raise failure_of(result)
            raise AgentFailed(f"step {step.id}: offer {id} was withdrawn", retryable=False)
        except asyncio.CancelledError:
            # Withdraw only when the run itself is cancelled: a coordinator cancelled because it
            # lost its lease leaves the offer for the one that took over to adopt.
            if run.cancel_requested:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.client.withdraw(id))
            raise

    async def close(self) -> None:
        await self.client.close()
