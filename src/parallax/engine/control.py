"""A run's control stream, as its coordinator sees it.

Guarantees:
- `state` is always exactly `fold(records of the control stream up to tail)`: events are
  applied only after the append that holds them is acknowledged, or after they are read back.
- Every append is conditional on the tail this coordinator last saw (`match_seq_num`) and
  carries its fencing token. Events emitted concurrently are batched into one atomic append.
- If another process appended in between (a person approving a gate, a cancel request),
  the append fails with SeqNumMismatch; the log reads those records, folds them, and tries
  again. If another coordinator fenced the stream, every waiting emit fails with `Fenced`.
- A step output too large for a record of its own (over 256 KiB of JSON) is kept as a blob
  (`StreamStore.put_blob`) and the record names it (`{"$blob": "sha256:...", "bytes": n}`);
  reading the log back resolves it, so the fold never sees the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from parallax.core import events as ev
from parallax.core.errors import Fenced, FencingTokenMismatch, SeqNumMismatch
from parallax.core.events import Event, decode_event
from parallax.core.state import RunState
from parallax.engine.snapshots import SNAPSHOT_EVERY, dump_state, load_snapshot, write_snapshot
from parallax.streams.base import MAX_BATCH_BYTES, AppendInput, AppendRecord, Record, StreamStore

BLOB_THRESHOLD = 256 * 1024


async def stored_form(store: StreamStore, event: Event) -> Event:
    """The event as it goes on the log: a large step output moved into a blob."""
    if event.type != ev.STEP_OUTPUT or "output" not in event.data:
        return event
    encoded = orjson.dumps(event.data["output"])
    if len(encoded) <= BLOB_THRESHOLD:
        return event
    ref = await store.put_blob(encoded)
    data = {**event.data, "output": {"$blob": ref, "bytes": len(encoded)}}
    return Event(event.type, data, event.step, event.agent, event.idem, event.seq_num, event.timestamp)


async def resolved(store: StreamStore, event: Event) -> Event:
    """The event as it was emitted: a blob-held step output read back."""
    if event.type != ev.STEP_OUTPUT:
        return event
    output: Any = event.data.get("output")
    if not (isinstance(output, dict) and isinstance(output.get("$blob"), str) and len(output) == 2):
        return event
    data = {**event.data, "output": orjson.loads(await store.get_blob(output["$blob"]))}
    return Event(event.type, data, event.step, event.agent, event.idem, event.seq_num, event.timestamp)


def control_stream(run_id: str) -> str:
    return f"runs/{run_id}/control"


def agent_stream(run_id: str, agent: str) -> str:
    return f"runs/{run_id}/agents/{agent}"


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
        self.snapshots = snapshots  # take fold snapshots every SNAPSHOT_EVERY records (the coordinator does)
        self.on_event = on_event  # called with each event once its append is acknowledged
        self.run_id = run_id
        self.stream = control_stream(run_id)
        self.state = RunState()
        self.tail = 0
        self.token: str | None = None
        self._pending: deque[tuple[Event, asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.foreign = asyncio.Event()  # set whenever records written by someone else are folded
        self._stored_as: dict[asyncio.Future[None], Event] = {}  # an emit's form on the log, when it differs
        self._snapshot_at = 0
        self._snapshot_writes: set[asyncio.Task[None]] = set()

    async def load(self) -> RunState:
        """Fold the log: from the newest snapshot that checks out against it, else from 0."""
        async with self._lock:
            if self.tail == 0:
                found = await load_snapshot(self.store, self.run_id, self.stream)
                if found is not None:
                    self.state, self.tail = found
                    self._snapshot_at = self.tail
            await self._read_new()
            self._loaded = True
        return self.state

    async def _read_new(self) -> list[Event]:
        records = await self.store.read_all(self.stream, self.tail)
        folded: list[Event] = []
        for record in records:
            event = decode_event(record.headers, record.body, record.seq_num, record.timestamp)
            if event is not None:
                event = await resolved(self.store, event)
                self.state.apply(event)
                folded.append(event)
                if self.on_folded is not None and self._loaded:
                    self.on_folded(event)
            self.tail = record.seq_num + 1
        if folded:
            self.foreign.set()
        if records:
            self._maybe_snapshot(records[-1], records[-1].timestamp)
        return folded

    def _maybe_snapshot(self, last: Record | AppendRecord, timestamp: int) -> None:
        """Every SNAPSHOT_EVERY records: pickle the state now (it folds exactly [0, tail)) and
        keep it in the background; a failed write only means the next resume folds more."""
        if not self.snapshots or self.tail - self._snapshot_at < SNAPSHOT_EVERY:
            return
        self._snapshot_at = self.tail
        payload = dump_state(self.state)
        task = asyncio.get_running_loop().create_task(
            write_snapshot(self.store, self.run_id, payload, self.tail, last, timestamp)
        )
        self._snapshot_writes.add(task)
        task.add_done_callback(_finished_write(self._snapshot_writes))

    async def sync(self) -> list[Event]:
        """Fold whatever others appended since our tail."""
        async with self._lock:
            return await self._read_new()

    async def take_over(self, token: str) -> None:
        """Fence the stream with our token: any earlier coordinator's next append is refused."""
        async with self._lock:
            await self._read_new()
            ack = await self.store.fence(self.stream, token)
            self.token = token
            if ack.start.seq_num == self.tail:
                self.tail = ack.end.seq_num
            else:
                await self._read_new()

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
                self._stored_as[future] = stored
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

    def _take_batch(self) -> list[tuple[Event, asyncio.Future[None], AppendRecord]]:
        batch: list[tuple[Event, asyncio.Future[None], AppendRecord]] = []
        size = 0
        while self._pending and len(batch) < 1000:
            event, future = self._pending[0]
            headers, body = self._stored_as.get(future, event).encode()
            record = AppendRecord(body=body, headers=headers)
            metered = record.metered_bytes
            if batch and size + metered > MAX_BATCH_BYTES:
                break
            self._pending.popleft()
            batch.append((event, future, record))
            size += metered
        return batch

    async def _flush_loop(self) -> None:
        while self._pending:
            async with self._lock:
                batch = self._take_batch()
                try:
                    ack = await self.store.append(
                        self.stream,
                        AppendInput([r for _, _, r in batch], match_seq_num=self.tail, fencing_token=self.token),
                    )
                except SeqNumMismatch:
                    self._pending.extendleft((e, f) for e, f, _ in reversed(batch))
                    await self._read_new()
                    continue
                except FencingTokenMismatch as e:
                    error = Fenced(f"run {self.run_id}: another coordinator took over ({e})")
                    for _, future, _ in batch:
                        _fail(future, error)
                    for _, future in self._pending:
                        _fail(future, error)
                    self._pending.clear()
                    self._stored_as.clear()
                    return
                except BaseException as e:
                    for _, future, _ in batch:
                        self._stored_as.pop(future, None)
                        _fail(future, e if isinstance(e, Exception) else RuntimeError(repr(e)))
                    if not isinstance(e, Exception):
                        raise
                    continue
                timestamp = ack.end.timestamp
                for offset, (event, future, _) in enumerate(batch):
                    positioned = _positioned(event, ack.start.seq_num + offset, timestamp)
                    self.state.apply(positioned)
                    if self.on_event is not None:
                        self.on_event(positioned)
                    self._stored_as.pop(future, None)
                    if not future.done():
                        future.set_result(None)
                self.tail = ack.end.seq_num
                self._maybe_snapshot(batch[-1][2], ack.end.timestamp)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher
        if self._snapshot_writes:
            await asyncio.gather(*self._snapshot_writes, return_exceptions=True)


def _finished_write(pending: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed snapshot write is not an error of the run

    return done


def _positioned(event: Event, seq_num: int, timestamp: int) -> Event:
    return Event(event.type, event.data, event.step, event.agent, event.idem, seq_num, timestamp)


def _fail(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def read_events(store: StreamStore, stream: str, start: int = 0) -> Sequence[Event]:
    out: list[Event] = []
    for record in await store.read_all(stream, start):
        event = decode_event(record.headers, record.body, record.seq_num, record.timestamp)
        if event is not None:
            out.append(await resolved(store, event))
    return out
