"""A folded stream: the one primitive behind Parallax's central move, "fold a stream, decide,
append conditionally at the tail, re-decide on a lost race".

A `FoldedStream` holds a stream's name, the tail it has folded up to, and the function that folds
one item into the caller's state (the caller owns the state: a task board, a work board, a
bucket, a run). Items go to and from records through a `Codec` (the mapper: events by default).

Guarantees:
- The caller's state is always exactly the fold of records [0, tail): records are applied in
  order, each once, and only after they are read back or their append is acknowledged.
- `append(items, conditional=True)` appends at the folded tail (`match_seq_num = tail`, plus the
  fencing token when one is set). When it wins, nothing came between the fold and the items, so
  they are folded right away without a read; when another writer got there first it folds what
  they wrote and returns None: nothing of ours was appended on a stale fold.
- `decide_and_append(decide)` loops: fold, `decide()` on the fresh state, append conditionally;
  a lost race means deciding again on the state that now includes the winner's records. Across
  processes exactly one of two racing deciders appends at a given tail.
- Each append reports, per item, whether the fold accepted it (`apply` returned True or None)
  or refused it (`apply` returned False): a fold may refuse events that are not legal at their
  position (a claim on a task someone holds), and the appender learns it from its own fold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from parallax.core.errors import SeqNumMismatch, StreamNotFound
from parallax.core.events import Event, decode_event
from parallax.streams.records import AppendAck, AppendInput, AppendRecord, Record

T = TypeVar("T")


class Streams(Protocol):
    """What a folded stream needs of a store (every `StreamStore` is one)."""

    async def read_all(self, stream: str, start: int = 0) -> list[Record]: ...

    async def append(self, stream: str, input: AppendInput) -> AppendAck: ...

    async def fence(self, stream: str, token: str, *, fencing_token: str | None = None) -> AppendAck: ...

    async def wait_for_tail(self, stream: str, beyond: int) -> int: ...


class Codec(Protocol[T]):
    """Items to records and back (the mapper): one place per kind of stream."""

    def to_record(self, item: T) -> AppendRecord: ...

    def from_record(self, record: Record) -> T | None:
        """The item a record holds (with its position), or None for a record that holds none."""

    def at(self, item: T, seq_num: int, timestamp: int) -> T:
        """`item` as it reads back from position `seq_num` (for folding an acknowledged append)."""


def event_record(event: Event) -> AppendRecord:
    """The record an event is written as: headers type/step/agent/idem, body its JSON."""
    headers, body = event.encode()
    return AppendRecord(body=body, headers=headers)


def record_event(record: Record) -> Event | None:
    """The event a record holds, positioned (seq_num, timestamp); None for other records."""
    return decode_event(record.headers, record.body, record.seq_num, record.timestamp)


def positioned(event: Event, seq_num: int, timestamp: int) -> Event:
    return Event(event.type, event.data, event.step, event.agent, event.idem, seq_num, timestamp)


class EventCodec:
    """The codec of every event stream (control, work boards, schedules, hooks, ...)."""

    def to_record(self, item: Event) -> AppendRecord:
        return event_record(item)

    def from_record(self, record: Record) -> Event | None:
        return record_event(record)

    def at(self, item: Event, seq_num: int, timestamp: int) -> Event:
        return positioned(item, seq_num, timestamp)


EVENTS = EventCodec()


@dataclass(frozen=True)
class Appended:
    """Where an append landed and which of its items the fold accepted."""

    start: int  # seq_num of the first item
    end: int  # one past the last
    accepted: tuple[bool, ...]
    timestamp: int = 0  # the items' timestamp on the stream

    @property
    def all_accepted(self) -> bool:
        return all(self.accepted)


class FoldedStream(Generic[T]):
    """One process's fold of one stream (see the module docstring)."""

    def __init__(
        self,
        store: Streams,
        stream: str,
        apply: Callable[[T], bool | None],
        codec: Codec[T],
        *,
        resolve: Callable[[T], Awaitable[T]] | None = None,
        on_synced: Callable[[list[T]], None] | None = None,
    ) -> None:
        self.store = store
        self.stream = stream
        self.apply = apply  # folds one item into the caller's state; False: refused there
        self.codec = codec
        self.resolve = resolve  # turns a stored item back into its emitted form (a blob read back)
        self.on_synced = on_synced  # called with the items each read folded (others' records, mostly)
        self.tail = 0
        self.token: str | None = None  # fencing token carried by every append once set
        self.last_record: Record | AppendRecord | None = None  # the newest record folded
        self.last_timestamp = 0  # and its timestamp on the stream
        self.lock = asyncio.Lock()  # held across fold + append; `sync` and `append` take it
        self._changed = asyncio.Event()

    def seed(self, tail: int) -> None:
        """Continue from a state the caller restored (a snapshot of [0, tail))."""
        self.tail = tail

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next fold that sees new records; take it *before* looking at the state."""
        return self._changed

    async def sync(self) -> list[T]:
        """Fold whatever was appended since our tail (by anyone); the items folded."""
        async with self.lock:
            return await self.sync_locked()

    async def sync_locked(self) -> list[T]:
        """`sync` for a caller that already holds `lock` (deciding and appending under it)."""
        try:
            records = await self.store.read_all(self.stream, self.tail)
        except StreamNotFound:
            return []
        folded: list[T] = []
        for record in records:
            item = self.codec.from_record(record)
            if item is not None:
                if self.resolve is not None:
                    item = await self.resolve(item)
                self.apply(item)
                folded.append(item)
            self.tail = record.seq_num + 1
            self.last_record = record
            self.last_timestamp = record.timestamp
        if records:
            self._wake()
        if folded and self.on_synced is not None:
            self.on_synced(folded)
        return folded

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def append(self, items: Sequence[T], *, conditional: bool = True) -> Appended | None:
        """Append `items` in one atomic batch and fold them. Conditional (the default): at the
        folded tail, None when the tail moved first (what moved it is folded). Unconditional:
        wherever the tail is; then everything up to our items is folded."""
        async with self.lock:
            return await self.append_locked(items, conditional=conditional)

    async def append_locked(self, items: Sequence[T], *, conditional: bool = True) -> Appended | None:
        records = [self.codec.to_record(item) for item in items]
        match = self.tail if conditional else None
        try:
            ack = await self.store.append(
                self.stream, AppendInput(records, match_seq_num=match, fencing_token=self.token)
            )
        except SeqNumMismatch:
            if not conditional:
                raise
            await self.sync_locked()
            return None
        start = ack.start.seq_num
        if ack.start.seq_num == self.tail:
            # Nothing came between our fold and our items: fold them here, no read needed.
            accepted = []
            for offset, item in enumerate(items):
                result = self.apply(self.codec.at(item, start + offset, ack.start.timestamp))
                accepted.append(result is not False)
            self.tail = ack.end.seq_num
            self.last_record = records[-1]
            self.last_timestamp = ack.end.timestamp
            self._wake()
            return Appended(start, ack.end.seq_num, tuple(accepted), ack.start.timestamp)
        # Others appended before ours (unconditional): fold theirs and ours in log order.
        mine: dict[int, bool] = {}
        original = self.apply

        def recording(item: T) -> bool | None:
            result = original(item)
            seq = getattr(item, "seq_num", None)
            if isinstance(seq, int) and start <= seq < ack.end.seq_num:
                mine[seq] = result is not False
            return result

        self.apply = recording
        try:
            await self.sync_locked()
        finally:
            self.apply = original
        flags = tuple(mine.get(start + i, False) for i in range(len(items)))
        return Appended(start, ack.end.seq_num, flags, ack.start.timestamp)

    async def decide_and_append(self, decide: Callable[[], Sequence[T] | None]) -> Appended | None:
        """Fold, decide on the fresh state, append at the folded tail; on a lost race fold the
        winner's records and decide again. None when `decide` finds nothing to append; an
        exception from `decide` (a refusal) propagates with nothing appended."""
        async with self.lock:
            while True:
                await self.sync_locked()
                items = decide()
                if not items:
                    return None
                appended = await self.append_locked(items, conditional=True)
                if appended is not None:
                    return appended

    async def fence(self, token: str) -> None:
        """Fence the stream with `token` (a command record) and carry it on every later append."""
        async with self.lock:
            await self.sync_locked()
            ack = await self.store.fence(self.stream, token)
            self.token = token
            if ack.start.seq_num == self.tail:
                self.tail = ack.end.seq_num
            else:
                await self.sync_locked()

    async def wait_for_change(self, seconds: float) -> None:
        """Wait up to `seconds` for a record past our tail (from any process), then fold it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.store.wait_for_tail(self.stream, self.tail)
        await self.sync()
