"""A run's control stream, as its coordinator sees it.

Guarantees:
- `state` is always exactly `fold(records of the control stream up to tail)`: events are
  applied only after the append that holds them is acknowledged, or after they are read back.
- Every append is conditional on the tail this coordinator last saw (`match_seq_num`) and
  carries its fencing token. Events emitted concurrently are batched into one atomic append.
- If another process appended in between (a person approving a gate, a cancel request),
  the append fails with SeqNumMismatch; the log reads those records, folds them, and decides
  again: an event that would only repeat what the log now says (the end of a step that has
  ended, the end of a run that has ended) is settled, not appended, so each step's end is
  recorded once even when two coordinators race. If another coordinator fenced the stream,
  every waiting emit fails with `Fenced`.
- A step output or a plan too large for a record of its own (over 256 KiB of JSON) is kept as
  a blob (`StreamStore.put_blob`) and the record names it (`{"$blob": "sha256:...", "bytes": n}`);
  reading the log back resolves it, so the fold never sees the difference (and a plan of any
  size fits the log).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from parallax.core import events as ev
from parallax.core.errors import Fenced, FencingTokenMismatch
from parallax.core.events import Event
from parallax.core.plan import Plan
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.engine.snapshots import dump_plan, dump_state, load_snapshot, snapshot_due, state_size, write_snapshot
from parallax.streams.base import MAX_BATCH_BYTES, AppendRecord, Record, StreamStore
from parallax.streams.folded import FoldedStream, event_record, positioned, record_event

BLOB_THRESHOLD = 256 * 1024


_STEP_ENDS = frozenset({ev.STEP_OUTPUT, ev.STEP_FAILED, ev.STEP_SKIPPED})

# The field of each event type that may be too large for a record.
_BLOB_FIELDS = {ev.STEP_OUTPUT: "output", ev.RUN_CREATED: "plan", ev.RUN_FORKED: "plan"}


async def stored_form(store: StreamStore, event: Event) -> Event:
    """The event as it goes on the log: a large step output or plan moved into a blob."""
    name = _BLOB_FIELDS.get(event.type)
    if name is None or name not in event.data:
        return event
    encoded = orjson.dumps(event.data[name])
    if len(encoded) <= BLOB_THRESHOLD:
        return event
    ref = await store.put_blob(encoded)
    data = {**event.data, name: {"$blob": ref, "bytes": len(encoded)}}
    return Event(event.type, data, event.step, event.agent, event.idem, event.seq_num, event.timestamp)


async def resolved(store: StreamStore, event: Event) -> Event:
    """The event as it was emitted: a blob-held step output or plan read back."""
    name = _BLOB_FIELDS.get(event.type)
    if name is None:
        return event
    value: Any = event.data.get(name)
    if not (isinstance(value, dict) and isinstance(value.get("$blob"), str) and len(value) == 2):
        return event
    data = {**event.data, name: orjson.loads(await store.get_blob(value["$blob"]))}
    return Event(event.type, data, event.step, event.agent, event.idem, event.seq_num, event.timestamp)


def control_stream(run_id: str) -> str:
    return RunStreams(run_id).control


def agent_stream(run_id: str, agent: str) -> str:
    return RunStreams(run_id).agent(agent)


class ControlCodec:
    """Events to records for the control stream: an event whose output went to a blob is
    written in its stored form (registered by `ControlLog.emit`), and folded as emitted."""

    def __init__(self) -> None:
        self.stored: dict[int, Event] = {}  # id(event) -> its form on the log, when it differs
        self.records: dict[int, AppendRecord] = {}  # id(event) -> its record, encoded once

    def record(self, item: Event) -> AppendRecord:
        """The event's record, kept until it is appended (`to_record`) or forgotten."""
        record = self.records.get(id(item))
        if record is None:
            record = self.records[id(item)] = event_record(self.stored.get(id(item), item))
        return record

    def to_record(self, item: Event) -> AppendRecord:
        record = self.records.pop(id(item), None)
        return record if record is not None else event_record(self.stored.get(id(item), item))

    def from_record(self, record: Record) -> Event | None:
        return record_event(record)

    def at(self, item: Event, seq_num: int, timestamp: int) -> Event:
        return positioned(item, seq_num, timestamp)


class ControlLog:
    def __init__(
        self,
        store: StreamStore,
        run_id: str,
        on_event: Callable[[Event], None] | None = None,
        *,
        snapshots: bool = False,
        on_folded: Callable[[Event], None] | None = None,
    ) -> None:
        self.store = store
        self.on_folded = on_folded  # called with each event others appended, folded after load()
        self._loaded = False
        self.snapshots = snapshots  # take fold snapshots (the coordinator does; see engine.snapshots)
        self.on_event = on_event  # called with each event once its append is acknowledged
        self.run_id = run_id
        self.stream = control_stream(run_id)
        self.state = RunState()
        self._codec = ControlCodec()
        self.folded = FoldedStream(
            store,
            self.stream,
            self._apply,
            self._codec,
            resolve=lambda event: resolved(store, event),
            on_synced=self._synced,
        )
        self._pending: deque[tuple[Event, asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.foreign = asyncio.Event()  # set whenever records written by someone else are folded
        self._snapshot_at = 0
        self._snapshot_due = False
        self._snapshot_writes: set[asyncio.Task[None]] = set()
        self._snapshot_chain: asyncio.Task[None] | None = None  # the last write: writes go one at a time
        self._plan_blob: tuple[Plan, asyncio.Task[tuple[str, str]]] | None = None

    @property
    def tail(self) -> int:
        return self.folded.tail

    @property
    def token(self) -> str | None:
        return self.folded.token

    def _apply(self, event: Event) -> None:
        self.state.apply(event)

    def _synced(self, events: list[Event]) -> None:
        if self.on_folded is not None and self._loaded:
            for event in events:
                self.on_folded(event)
        self.foreign.set()
        self._maybe_snapshot()

    async def load(self) -> RunState:
        """Fold the log: from the newest snapshot that checks out against it, else from 0."""
        async with self.folded.lock:
            if self.folded.tail == 0:
                found = await load_snapshot(self.store, self.run_id, self.stream)
                if found is not None:
                    self.state, tail = found
                    self.folded.seed(tail)
                    self._snapshot_at = tail
            await self.folded.sync_locked()
            self._loaded = True
        return self.state

    def _maybe_snapshot(self) -> None:
        """When a snapshot is due (`snapshot_due`), take it just after the current callback,
        outside the log's lock."""
        if not self.snapshots or self._snapshot_due or not self._due():
            return
        self._snapshot_due = True
        asyncio.get_running_loop().call_soon(self._take_snapshot)

    def _due(self) -> bool:
        return snapshot_due(self.tail, self._snapshot_at, state_size(self.state))

    def _take_snapshot(self) -> None:
        """Pickle the state now (synchronously: it folds exactly [0, tail)) and keep it in the
        background; a failed write only means the next resume folds more."""
        self._snapshot_due = False
        last, plan = self.folded.last_record, self.state.plan
        if last is None or plan is None or not self._due():
            return
        self._snapshot_at = self.tail
        payload = dump_state(self.state)
        loop = asyncio.get_running_loop()
        if self._plan_blob is None or self._plan_blob[0] is not plan:
            self._plan_blob = (plan, loop.create_task(self._keep_plan(plan)))
        previous, plan_blob = self._snapshot_chain, self._plan_blob[1]
        at, timestamp = self.tail, self.folded.last_timestamp

        async def write() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await write_snapshot(self.store, self.run_id, payload, await plan_blob, at, last, timestamp)

        task = self._snapshot_chain = loop.create_task(write())
        self._snapshot_writes.add(task)
        task.add_done_callback(_finished_write(self._snapshot_writes))

    async def _keep_plan(self, plan: Plan) -> tuple[str, str]:
        """The plan's blob and content hash (dumped in a thread: a plan is immutable)."""
        data, digest = await asyncio.to_thread(dump_plan, plan)
        return await self.store.put_blob(data), digest

    async def sync(self) -> list[Event]:
        """Fold whatever others appended since our tail."""
        return await self.folded.sync()

    async def take_over(self, token: str) -> None:
        """Fence the stream with our token: any earlier coordinator's next append is refused."""
        await self.folded.fence(token)

    async def decide_and_append(self, decide: Callable[[], Sequence[Event] | None]) -> bool:
        """Fold, decide on the fresh state, append at the tail (deciding again after a lost
        race); whether anything was appended."""
        return await self.folded.decide_and_append(decide) is not None

    async def emit(self, *events: Event) -> None:
        """Append events durably (in order, batched with concurrent emits) and fold them."""
        if not events:
            return
        loop = asyncio.get_running_loop()
        futures = []
        for event in events:
            future: asyncio.Future[None] = loop.create_future()
            stored = await stored_form(self.store, event)
            if stored is not event:
                self._codec.stored[id(event)] = stored
            self._pending.append((event, future))
            futures.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        # Every event of one emit lands in the same append or a later one, in order, so the
        # last future resolving means all did; failures resolve all of them at once.
        try:
            await futures[-1]
        finally:
            errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
        for error in errors:
            if error is not None:
                raise error

    def _take_batch(self) -> list[tuple[Event, asyncio.Future[None]]]:
        batch: list[tuple[Event, asyncio.Future[None]]] = []
        size = 0
        while self._pending and len(batch) < 1000:
            event, future = self._pending[0]
            metered = self._codec.record(event).metered_bytes
            if batch and size + metered > MAX_BATCH_BYTES:
                break
            self._pending.popleft()
            batch.append((event, future))
            size += metered
        return batch

    def _still_news(self, batch: list[tuple[Event, asyncio.Future[None]]]) -> list[tuple[Event, asyncio.Future[None]]]:
        """What of a batch is still to be appended after folding what others appended first. A
        step's end (output, failure, skip) for a step the log now says has ended, or the run's
        end for a run that has ended, would only repeat it: such an event is settled (its emit
        returns; the state says what happened) instead of appended a second time. This is how a
        coordinator that lost a race to another (a takeover, a late flush) keeps each step's
        output recorded once."""
        keep = []
        for event, future in batch:
            step = self.state.steps.get(event.step or "") if event.step else None
            ended = (event.type in _STEP_ENDS and step is not None and step.done) or (
                event.type == ev.RUN_FINISHED and self.state.finished
            )
            if ended:
                self._forget([(event, future)])
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((event, future))
        return keep

    def _forget(self, batch: Sequence[tuple[Event, asyncio.Future[None]]]) -> None:
        for event, _ in batch:
            self._codec.stored.pop(id(event), None)
            self._codec.records.pop(id(event), None)

    async def _flush_loop(self) -> None:
        while self._pending:
            async with self.folded.lock:
                batch = self._take_batch()
                try:
                    appended = await self.folded.append_locked([e for e, _ in batch], conditional=True)
                except FencingTokenMismatch as e:
                    error = Fenced(f"run {self.run_id}: another coordinator took over ({e})")
                    everything = [*batch, *self._pending]
                    self._pending.clear()
                    self._forget(everything)
                    for _, future in everything:
                        _fail(future, error)
                    return
                except BaseException as e:
                    self._forget(batch)
                    for _, future in batch:
                        _fail(future, e if isinstance(e, Exception) else RuntimeError(repr(e)))
                    if not isinstance(e, Exception):
                        raise
                    continue
                if appended is None:  # someone else appended first: folded; decide again at the new tail
                    self._pending.extendleft(reversed(self._still_news(batch)))
                    continue
                self._forget(batch)
                for offset, (event, future) in enumerate(batch):
                    if self.on_event is not None:
                        self.on_event(positioned(event, appended.start + offset, appended.timestamp))
                    if not future.done():
                        future.set_result(None)
                self._maybe_snapshot()

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher
        if self._snapshot_due:  # due, and not yet taken: take it now rather than lose it
            self._take_snapshot()
        if self._snapshot_writes:
            await asyncio.gather(*self._snapshot_writes, return_exceptions=True)


def _finished_write(pending: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed snapshot write is not an error of the run

    return done


def _fail(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def read_events(store: StreamStore, stream: str, start: int = 0) -> Sequence[Event]:
    out: list[Event] = []
    for record in await store.read_all(stream, start):
        event = record_event(record)
        if event is not None:
            out.append(await resolved(store, event))
    return out
