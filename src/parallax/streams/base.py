"""The stream store boundary: S2's stream semantics, whatever keeps the bytes.

A stream is a named, append-only sequence of records. Every backend guarantees:

- `seq_num`s are contiguous from 0 (a fork keeps its source's numbers; a trim hides a prefix
  but never renumbers);
- an append of 1..1000 records (<= 1 MiB metered) is atomic: all of it is acknowledged at
  contiguous seq_nums, or none of it is written;
- an acknowledged append is durable (as durable as the backend is configured to be) and is
  never lost, duplicated or reordered;
- `match_seq_num` and `fencing_token` are checked atomically with the write, so of two racing
  conditional appends at the same `match_seq_num` exactly one wins, across processes;
- timestamps are milliseconds and never decrease within a stream;
- command records (one header with an empty name, value `fence` or `trim`) are ordinary records
  that also set the stream's fencing token or trim point.

Backends implement the seven abstract methods; everything else here is written once on top.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import hashlib
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from parallax.core.errors import BlobNotFound, ReadUnwritten, SeqNumMismatch, StreamNotFound

if TYPE_CHECKING:
    from parallax.streams.kv import KeyValue

Header = tuple[bytes, bytes]

MAX_BATCH_RECORDS = 1000
MAX_BATCH_BYTES = 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_STREAM_NAME_BYTES = 512
MAX_FENCING_TOKEN_BYTES = 36
DEFAULT_READ_COUNT = 1000
DEFAULT_READ_BYTES = 1024 * 1024

BLOB_CHUNK = 512 * 1024

COMMAND_FENCE = b"fence"
COMMAND_TRIM = b"trim"


def metered_size(headers: Sequence[Header], body: bytes) -> int:
    """S2's metered bytes: 8 + 2 per header + header names and values + body."""
    if not headers:
        return 8 + len(body)
    size = 8 + len(body) + 2 * len(headers)
    for name, value in headers:
        size += len(name) + len(value)
    return size


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A point in a stream: the seq_num there and the timestamp of the record before it."""

    seq_num: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Record:
    """A record as stored: immutable, numbered, timestamped."""

    seq_num: int
    timestamp: int
    headers: tuple[Header, ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The value of the first header called `name`, or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def metered_bytes(self) -> int:
        return metered_size(self.headers, self.body)

    @property
    def command(self) -> bytes | None:
        """`b"fence"` or `b"trim"` for a command record, else None."""
        if len(self.headers) == 1 and self.headers[0][0] == b"":
            return self.headers[0][1]
        return None


@dataclass(frozen=True, slots=True)
class AppendRecord:
    """A record to append. `timestamp` is optional: the store caps it at arrival time and
    raises it to the stream's last timestamp, so timestamps never run backwards."""

    body: bytes = b""
    headers: tuple[Header, ...] = ()
    timestamp: int | None = None

    @classmethod
    def fence(cls, token: str) -> AppendRecord:
        """A command record that sets the stream's fencing token (empty clears it)."""
        return cls(body=token.encode(), headers=((b"", COMMAND_FENCE),))

    @classmethod
    def trim(cls, seq_num: int) -> AppendRecord:
        """A command record that makes records below `seq_num` unreadable."""
        return cls(body=struct.pack(">Q", seq_num), headers=((b"", COMMAND_TRIM),))

    @property
    def metered_bytes(self) -> int:
        return metered_size(self.headers, self.body)


@dataclass(frozen=True, slots=True)
class AppendInput:
    """One atomic append: 1..1000 records, <= 1 MiB metered.

    `match_seq_num`, when set, must equal the seq_num the first record would get.
    `fencing_token`, when set, must equal the stream's current token ("" when none is set).
    """

    records: Sequence[AppendRecord]
    match_seq_num: int | None = None
    fencing_token: str | None = None


@dataclass(frozen=True, slots=True)
class AppendAck:
    """Where an append landed: `start` is its first record, `end` one past its last, and
    `tail` the stream's tail when the append was acknowledged."""

    start: StreamPosition
    end: StreamPosition
    tail: StreamPosition


@dataclass(frozen=True, slots=True)
class SeqNum:
    """Read from this seq_num."""

    seq_num: int


@dataclass(frozen=True, slots=True)
class Timestamp:
    """Read from the first record whose timestamp is >= this (ms)."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class TailOffset:
    """Read from this many records before the tail."""

    offset: int


ReadStart = SeqNum | Timestamp | TailOffset


@dataclass(frozen=True, slots=True)
class ReadLimit:
    """At most `count` records (<= 1000) and `bytes` metered bytes (<= 1 MiB) per read.

    The first available record is always returned, whatever `bytes` says, so a reader always
    makes progress; `count=0` reads nothing and only reports the tail.
    """

    count: int | None = None
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ReadBatch:
    records: tuple[Record, ...]
    tail: StreamPosition


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    created_at: int  # ms since the epoch


@dataclass(frozen=True, slots=True)
class StreamState:
    """What a backend keeps per stream besides its records."""

    next_seq: int = 0
    last_timestamp: int = 0
    fencing_token: str = ""
    trim_point: int = 0


class StreamStore(abc.ABC):
    """A namespace of streams with S2 semantics. Use as an async context manager, or call
    `close()`; every method is safe to call concurrently from one event loop."""

    url: str = ""

    @abc.abstractmethod
    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        """Append a batch atomically. Creates the stream if the store creates on append.

        Raises InvalidAppend before anything is written if the batch breaks a limit;
        SeqNumMismatch / FencingTokenMismatch if a condition fails (nothing written);
        StreamNotFound if the stream does not exist and the store does not create on append.
        """

    @abc.abstractmethod
    async def read(
        self,
        stream: str,
        start: ReadStart = SeqNum(0),
        limit: ReadLimit = ReadLimit(),
        *,
        clamp: bool = False,
    ) -> ReadBatch:
        """Read one batch from `start`. Records below the trim point are skipped.

        A start past the tail raises ReadUnwritten(tail), unless `clamp` moves it to the tail.
        Reading at the tail returns an empty batch; it does not wait (see `tail`).
        """

    @abc.abstractmethod
    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        """Wait until the stream's tail is greater than `beyond`, then return the tail.

        Sees appends made by other processes too. Returns at once if the tail already is.
        Raises StreamNotFound if the stream does not exist or is deleted while waiting.
        """

    @abc.abstractmethod
    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> list[StreamInfo]:
        """Streams whose names start with `prefix`, in name order, after `start_after`."""

    @abc.abstractmethod
    async def create(self, stream: str) -> StreamInfo:
        """Create an empty stream. Raises StreamExists if the name is taken."""

    @abc.abstractmethod
    async def delete(self, stream: str) -> None:
        """Delete a stream and all its records. Raises StreamNotFound if there is none."""

    @abc.abstractmethod
    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        """Create `dst` holding `src`'s records below `at_seq`, with the same seq_nums and
        timestamps, and the fencing token and trim point in force at that point.

        Raises StreamNotFound (src), StreamExists (dst), ReadUnwritten (at_seq past src's tail).
        """

    async def close(self) -> None:
        """Release connections and threads; pending appends are finished first."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Written once on top of the abstract operations.

    async def put_blob(self, data: bytes) -> str:
        """Keep `data` under its content address (`sha256:<hex>`) and return the address.
        By default a blob is the stream `blobs/<hex>`: chunks of 512 KiB appended at their
        positions, then an end record; writing the same blob twice writes it once. A backend
        with an object store overrides this (NATS)."""
        digest = hashlib.sha256(data).hexdigest()
        stream = f"blobs/{digest}"
        chunks = [data[i : i + BLOB_CHUNK] for i in range(0, len(data), BLOB_CHUNK)] or [b""]
        try:
            for index, chunk in enumerate(chunks):
                await self.append(stream, AppendInput([AppendRecord(chunk)], match_seq_num=index))
            end = AppendRecord(str(len(data)).encode(), headers=((b"blob", b"end"),))
            await self.append(stream, AppendInput([end], match_seq_num=len(chunks)))
        except SeqNumMismatch:
            await self.get_blob(f"sha256:{digest}")  # written by someone else: it must be whole
        return f"sha256:{digest}"

    async def get_blob(self, ref: str) -> bytes:
        """The bytes kept under `ref`; raises BlobNotFound if they are not all there (or do not
        hash to the address)."""
        digest = ref.removeprefix("sha256:")
        try:
            records = await self.read_all(f"blobs/{digest}")
        except StreamNotFound:
            raise BlobNotFound(ref) from None
        if not records or records[-1].header(b"blob") != b"end":
            raise BlobNotFound(ref)
        data = b"".join(r.body for r in records[:-1])
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobNotFound(ref)
        return data

    def kv(self, bucket: str) -> KeyValue:
        """A key-value bucket with compare-and-swap (leases, the agent registry). By default a
        fold of the stream `kv/<bucket>`; a backend with its own buckets overrides this."""
        from parallax.streams.kv import StreamKeyValue

        buckets: dict[str, KeyValue] = self.__dict__.setdefault("_kv_buckets", {})
        if bucket not in buckets:
            buckets[bucket] = StreamKeyValue(self, bucket)
        return buckets[bucket]

    async def check_tail(self, stream: str) -> StreamPosition:
        """The seq_num the next record will get, and the last record's timestamp."""
        batch = await self.read(stream, TailOffset(0), ReadLimit(count=0))
        return batch.tail

    async def append_records(
        self,
        stream: str,
        records: Sequence[AppendRecord],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
    ) -> AppendAck:
        return await self.append(stream, AppendInput(records, match_seq_num, fencing_token))

    async def fence(self, stream: str, token: str, *, fencing_token: str | None = None) -> AppendAck:
        """Set the stream's fencing token (empty clears it) with a command record."""
        return await self.append(stream, AppendInput([AppendRecord.fence(token)], fencing_token=fencing_token))

    async def trim(self, stream: str, seq_num: int, *, fencing_token: str | None = None) -> AppendAck:
        """Make records below `seq_num` unreadable, with a command record."""
        return await self.append(stream, AppendInput([AppendRecord.trim(seq_num)], fencing_token=fencing_token))

    async def read_all(self, stream: str, start: int = 0) -> builtins.list[Record]:
        """Every readable record from `start` to the tail as it is now."""
        out: builtins.list[Record] = []
        position = start
        while True:
            batch = await self.read(stream, SeqNum(position), clamp=True)
            out.extend(batch.records)
            if not batch.records or batch.records[-1].seq_num + 1 >= batch.tail.seq_num:
                return out
            position = batch.records[-1].seq_num + 1

    async def tail(self, stream: str, from_seq: int = 0, *, missing_ok: bool = False) -> AsyncIterator[Record]:
        """Yield records from `from_seq` on, forever, waiting for new ones as they are appended
        (by this process or any other). A `from_seq` past the tail waits for the stream to reach
        it. With `missing_ok`, a stream that does not exist yet is waited for instead of raising
        StreamNotFound."""
        position = from_seq
        while True:
            try:
                batch = await self.read(stream, SeqNum(position))
            except StreamNotFound:
                if not missing_ok:
                    raise
                await self._wait_for_stream(stream)
                continue
            except ReadUnwritten:
                await self.wait_for_tail(stream, position)
                continue
            for record in batch.records:
                yield record
                position = record.seq_num + 1
            if not batch.records:
                await self.wait_for_tail(stream, position)

    async def _wait_for_stream(self, stream: str) -> None:
        """Wait for a stream to be created (polled; rare: only `tail(..., missing_ok=True)`)."""
        # Polled because creation has no tail to wait on; only tail(..., missing_ok=True) gets here.
        while not [info for info in await self.list(prefix=stream, limit=1) if info.name == stream]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
