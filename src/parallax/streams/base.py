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
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from parallax.core.errors import BlobNotFound, ReadUnwritten, SeqNumMismatch, StreamNotFound
from parallax.streams.kv import KeyValue, StreamKeyValue
from parallax.streams.records import (
    BLOB_CHUNK,
    COMMAND_FENCE,
    COMMAND_TRIM,
    DEFAULT_READ_BYTES,
    DEFAULT_READ_COUNT,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    MAX_RECORD_BYTES,
    MAX_STREAM_NAME_BYTES,
    AppendAck,
    AppendInput,
    AppendRecord,
    Header,
    ReadBatch,
    ReadLimit,
    ReadStart,
    Record,
    SeqNum,
    StreamInfo,
    StreamPosition,
    StreamState,
    TailOffset,
    Timestamp,
    metered_size,
)

__all__ = [
    "BLOB_CHUNK",
    "COMMAND_FENCE",
    "COMMAND_TRIM",
    "DEFAULT_READ_BYTES",
    "DEFAULT_READ_COUNT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_FENCING_TOKEN_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_STREAM_NAME_BYTES",
    "AppendAck",
    "AppendInput",
    "AppendRecord",
    "Header",
    "ReadBatch",
    "ReadLimit",
    "ReadStart",
    "Record",
    "SeqNum",
    "StreamInfo",
    "StreamPosition",
    "StreamState",
    "StreamStore",
    "TailOffset",
    "Timestamp",
    "metered_size",
]


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

    async def delete_blob(self, ref: str) -> None:
        """Forget the blob kept under `ref` (nothing happens if there is none). Blobs are shared
        by content: delete only one that nothing else can name."""
        with contextlib.suppress(StreamNotFound):
            await self.delete(f"blobs/{ref.removeprefix('sha256:')}")

    def kv(self, bucket: str) -> KeyValue:
        """A key-value bucket with compare-and-swap (leases, the agent registry). By default a
        fold of the stream `kv/<bucket>`; a backend with its own buckets overrides this."""
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
