"""In-process stream store: the same semantics as every backend, kept in dictionaries.

For tests and for runs that need no durability. Nothing survives the process; tails only see
appends made through the same store object.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from dataclasses import dataclass, field

from parallax.core.errors import ReadUnwritten, StreamExists, StreamNotFound
from parallax.streams.base import (
    AppendAck,
    AppendInput,
    ReadBatch,
    ReadLimit,
    ReadStart,
    Record,
    SeqNum,
    StreamInfo,
    StreamPosition,
    StreamState,
    StreamStore,
    Timestamp,
)
from parallax.streams.semantics import (
    apply_append,
    now_ms,
    resolve_limit,
    resolve_seq_start,
    take_within_bytes,
    validate_append,
    validate_stream_name,
)


@dataclass
class _Stream:
    created_at: int
    state: StreamState = field(default_factory=StreamState)
    records: list[Record] = field(default_factory=list[Record])  # records[i].seq_num == trim offset + i
    first_seq: int = 0
    fences: list[tuple[int, str]] = field(default_factory=list[tuple[int, str]])
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore(StreamStore):
    """Streams in a dict. Every operation completes without awaiting, so each is atomic."""

    def __init__(self, *, create_on_append: bool = True) -> None:
        self.url = "memory:"
        self.create_on_append = create_on_append
        self._streams: dict[str, _Stream] = {}

    def _get(self, stream: str) -> _Stream:
        try:
            return self._streams[stream]
        except KeyError:
            raise StreamNotFound(stream) from None

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        validate_stream_name(stream)
        validate_append(input)
        entry = self._streams.get(stream)
        if entry is None:
            if not self.create_on_append:
                raise StreamNotFound(stream)
            entry = _Stream(created_at=now_ms())
        before = entry.state
        applied = apply_append(stream, before, input, now_ms())
        self._streams.setdefault(stream, entry)
        entry.records.extend(applied.records)
        entry.fences.extend(applied.new_fences)
        entry.state = applied.state
        self._drop_trimmed(entry)
        entry.changed.set()
        entry.changed = asyncio.Event()
        first = applied.records[0]
        last = applied.records[-1]
        tail = StreamPosition(applied.state.next_seq, applied.state.last_timestamp)
        return AppendAck(
            StreamPosition(first.seq_num, first.timestamp), StreamPosition(last.seq_num + 1, last.timestamp), tail
        )

    @staticmethod
    def _drop_trimmed(entry: _Stream) -> None:
        drop = entry.state.trim_point - entry.first_seq
        if drop > 0:
            del entry.records[:drop]
            entry.first_seq = entry.state.trim_point

    async def read(
        self,
        stream: str,
        start: ReadStart = SeqNum(0),
        limit: ReadLimit = ReadLimit(),
        *,
        clamp: bool = False,
    ) -> ReadBatch:
        validate_stream_name(stream)
        entry = self._get(stream)
        count, max_bytes = resolve_limit(limit)
        state = entry.state
        if isinstance(start, Timestamp):
            timestamps = [r.timestamp for r in entry.records]
            position = entry.first_seq + bisect_left(timestamps, start.timestamp)
        else:
            position = resolve_seq_start(stream, start, state, clamp=clamp)
        index = position - entry.first_seq
        chosen = entry.records[index : index + count] if count else []
        tail = StreamPosition(state.next_seq, state.last_timestamp)
        return ReadBatch(tuple(take_within_bytes(chosen, max_bytes)), tail)

    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        while True:
            entry = self._get(stream)
            if entry.state.next_seq > beyond:
                return entry.state.next_seq
            await entry.changed.wait()

    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> list[StreamInfo]:
        names = sorted(n for n in self._streams if n.startswith(prefix) and n > start_after)
        return [StreamInfo(n, self._streams[n].created_at) for n in names[:limit]]

    async def create(self, stream: str) -> StreamInfo:
        validate_stream_name(stream)
        if stream in self._streams:
            raise StreamExists(stream)
        entry = _Stream(created_at=now_ms())
        self._streams[stream] = entry
        return StreamInfo(stream, entry.created_at)

    async def delete(self, stream: str) -> None:
        entry = self._get(stream)
        del self._streams[stream]
        entry.changed.set()

    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        validate_stream_name(dst)
        source = self._get(src)
        if dst in self._streams:
            raise StreamExists(dst)
        state = source.state
        if at_seq < 0 or at_seq > state.next_seq:
            raise ReadUnwritten(state.next_seq, stream=src, start=at_seq)
        kept = [r for r in source.records if r.seq_num < at_seq]
        fences = [(seq, token) for seq, token in source.fences if seq < at_seq]
        last_ts = kept[-1].timestamp if kept else (state.last_timestamp if at_seq == state.next_seq else 0)
        trim_point = min(state.trim_point, at_seq)
        entry = _Stream(
            created_at=now_ms(),
            state=StreamState(at_seq, last_ts, fences[-1][1] if fences else "", trim_point),
            records=kept,
            first_seq=trim_point,
            fences=fences,
        )
        self._streams[dst] = entry
        return StreamInfo(dst, entry.created_at)
