"""Following a run: the one way to watch one, from any process (terminal lanes, the server's live
feed, waiting for a run to end).

`follow_run` yields the run's control events in log order, each decoded and with a step output
kept in a blob resolved (the fold sees exactly what the runner emitted), and, when asked, the
events of each agent's stream, tailed from the moment its step starts. It ends after
`run.finished` (or never, with `until_finished=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from parallax.core import events as ev
from parallax.core.errors import StreamNotFound
from parallax.core.events import Event
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.engine.control import resolved
from parallax.engine.runs import load_run
from parallax.streams.base import Record, StreamStore
from parallax.streams.folded import record_event


@dataclass(frozen=True)
class Followed:
    kind: Literal["control", "agent"]
    stream: str
    event: Event  # decoded; a blob-held step output resolved
    record: Record  # as stored (for feeds that forward records)


async def follow_run(
    store: StreamStore, run_id: str, *, start: int = 0, agents: bool = True, until_finished: bool = True
) -> AsyncIterator[Followed]:
    """The run's events from control record `start` on, with its agents' events when `agents`."""
    names = RunStreams(run_id)
    queue: asyncio.Queue[Followed | BaseException] = asyncio.Queue(maxsize=10_000)
    tails: dict[str, asyncio.Task[None]] = {}

    async def follow(kind: Literal["control", "agent"], stream: str, begin: int) -> None:
        try:
            async for record in store.tail(stream, begin, missing_ok=True):
                event = record_event(record)
                if event is None:
                    continue
                if kind == "control":
                    event = await resolved(store, event)
                await queue.put(Followed(kind, stream, event, record))
        except Exception as e:  # the store went away: the follower sees it
            await queue.put(e)

    tails[names.control] = asyncio.create_task(follow("control", names.control, start))
    next_seq: dict[str, int] = {}  # per agent stream: one past the last record yielded
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item.kind == "agent":
                next_seq[item.stream] = item.record.seq_num + 1
            if agents and item.kind == "control" and item.event.type == ev.STEP_STARTED and item.event.step:
                stream = names.agent(item.event.step)
                if stream not in tails:
                    tails[stream] = asyncio.create_task(follow("agent", stream, 0))
                    next_seq[stream] = 0
            if until_finished and item.kind == "control" and item.event.type == ev.RUN_FINISHED:
                # Agents flush before their steps end, so what is on their streams now is all
                # there is: yield what the tails have not delivered yet, then the end.
                for stream, task in tails.items():
                    if stream != names.control:
                        task.cancel()
                for stream in list(next_seq):
                    with contextlib.suppress(StreamNotFound):
                        for record in await store.read_all(stream, next_seq[stream]):
                            event = record_event(record)
                            if event is not None:
                                yield Followed("agent", stream, event, record)
                yield item
                return
            yield item
    finally:
        for task in tails.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tails.values(), return_exceptions=True)


async def wait_finished(store: StreamStore, run_id: str) -> RunState:
    """Wait, from any process, until the run's `run.finished` is on the log; its folded state."""
    tail = (await store.check_tail(RunStreams(run_id).control)).seq_num  # before the fold: nothing is missed
    state = await load_run(store, run_id)
    if not state.finished:
        async for _ in follow_run(store, run_id, start=tail, agents=False):
            pass
        state = await load_run(store, run_id)
    return state
