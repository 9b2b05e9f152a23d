"""Control steps: the plan grows at run time.

A control step's decision is pure (`core/expand.py`); here it is carried out. Stream work a
decision needs (forking or merging cohort streams) is done first and is idempotent, then the
decision is recorded in one atomic append: `step.started`, `steps.added`, any conflicts and the
divergence, `step.output`. A crash before that append leaves nothing decided, and the resumed
run decides again from the same state, to the same result.
"""

from __future__ import annotations

import contextlib
from typing import Any

from parallax.core import events as ev
from parallax.core.errors import StreamExists, StreamNotFound
from parallax.core.events import Event
from parallax.core.expand import Expansion, cohort_stream, expand
from parallax.core.plan import Step
from parallax.engine.steps.context import StepContext
from parallax.streams.base import AppendInput, AppendRecord, StreamStore


async def run_control(ctx: StepContext, step: Step) -> None:
    outcome = expand(step, ctx.state)
    started = ev.StepStarted(1, "control").event(step.id)
    if outcome.error is not None:
        await ctx.emit(started, ev.StepFailed(outcome.error).event(step.id))
        return
    await _stream_work(ctx.store, ctx.run_id, outcome)
    events = [started]
    if outcome.add or outcome.rewire or outcome.session is not None or outcome.applied:
        grown = ev.StepsAdded(
            [s.model_dump(mode="json", by_alias=True, exclude_defaults=True) for s in outcome.add],
            {k: list(v) for k, v in outcome.rewire.items()},
            outcome.session,
            {str(k): v for k, v in outcome.applied.items()},
        )
        events.append(grown.event(step.id))
    events += [ev.ConflictFound(c.model_dump(mode="json")).event(step.id) for c in outcome.conflicts]
    if outcome.divergence is not None:
        events.append(Event(ev.DIVERGENCE, outcome.divergence, step=step.id))
    events.append(ev.StepOutput(outcome.output, outcome.confidence, attempt=1).event(step.id))
    await ctx.emit(*events)


async def _stream_work(store: StreamStore, run_id: str, outcome: Expansion) -> None:
    for source, into, at in outcome.forks:
        src, dst = cohort_stream(run_id, source), cohort_stream(run_id, into)
        try:
            tail = (await store.check_tail(src)).seq_num
            await store.fork(src, dst, tail if at is None else min(at, tail))
        except StreamNotFound:
            await _create_quietly(store, dst)
        except StreamExists:
            pass  # done before a crash
    for sources, into in outcome.merges:
        dst = cohort_stream(run_id, into)
        try:
            if (await store.check_tail(dst)).seq_num > 0:
                continue  # done before a crash
        except StreamNotFound:
            pass
        records: list[Any] = []
        for source in sources:
            try:
                records += await store.read_all(cohort_stream(run_id, source))
            except StreamNotFound:
                continue
        records.sort(key=lambda r: (r.timestamp, r.seq_num))
        batch = [AppendRecord(body=r.body, headers=r.headers) for r in records]
        if not batch:
            await _create_quietly(store, dst)
        for i in range(0, len(batch), 1000):
            await store.append(dst, AppendInput(batch[i : i + 1000]))


async def _create_quietly(store: StreamStore, stream: str) -> None:
    with contextlib.suppress(StreamExists):
        await store.create(stream)
