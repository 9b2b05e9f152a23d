"""S2 backend: Parallax streams on S2 itself (s2.dev) or a self-hosted s2-lite, through the
official `s2-sdk` client.

    s2://BASIN                                  S2 cloud; token from S2_ACCESS_TOKEN
    s2://BASIN?endpoint=http://127.0.0.1:8080   s2-lite (or any endpoint serving the basin)

S2 already has the semantics Parallax is written against (contiguous seq_nums, conditional
appends, fencing and trim command records, tailing reads), so most of this module is mapping:
records, read starts and limits, acknowledgements and errors between Parallax's types and the
SDK's. What S2 does not have is built here on top of its API:

- `fork` copies `src`'s records below `at_seq` into a new stream, command records included, so
  the copy has the same seq_nums and the fencing token in force at that point; the copy keeps
  the original timestamps (the stream is created with client timestamps). A fork below the
  source's trim point cannot keep seq_nums (S2 has no way to start a stream past 0) and is
  refused with a clear error;
- `wait_for_tail` is a long-polling read (`wait=`), which sees appends from any client.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from parallax.core.errors import (
    FencingTokenMismatch,
    ParallaxError,
    ReadUnwritten,
    SeqNumMismatch,
    StoreURLError,
    StreamError,
    StreamExists,
    StreamNotFound,
)
from parallax.streams.base import (
    AppendAck,
    AppendInput,
    AppendRecord,
    ReadBatch,
    ReadLimit,
    ReadStart,
    Record,
    SeqNum,
    StreamInfo,
    StreamPosition,
    StreamStore,
    TailOffset,
    Timestamp,
)
from parallax.streams.semantics import resolve_limit, validate_append, validate_stream_name

try:
    import s2_sdk as s2
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the S2 backend needs s2-sdk: pip install 'parallax[s2]'") from e


class S2StoreError(StreamError):
    """S2 refused or could not be reached; the message says which."""


# Mapping, both ways (unit-tested against the SDK's own types)


def to_sdk_record(record: AppendRecord) -> s2.Record:
    return s2.Record(body=record.body, headers=list(record.headers), timestamp=record.timestamp)


def to_sdk_input(input: AppendInput) -> s2.AppendInput:
    return s2.AppendInput(
        records=[to_sdk_record(r) for r in input.records],
        match_seq_num=input.match_seq_num,
        fencing_token=input.fencing_token,
    )


def from_sdk_record(record: s2.SequencedRecord) -> Record:
    return Record(record.seq_num, record.timestamp, tuple((bytes(n), bytes(v)) for n, v in record.headers), record.body)


def from_sdk_position(position: s2.StreamPosition) -> StreamPosition:
    return StreamPosition(position.seq_num, position.timestamp)


def from_sdk_ack(ack: s2.AppendAck) -> AppendAck:
    return AppendAck(from_sdk_position(ack.start), from_sdk_position(ack.end), from_sdk_position(ack.tail))


def to_sdk_start(start: ReadStart) -> s2.SeqNum | s2.Timestamp | s2.TailOffset:
    if isinstance(start, SeqNum):
        return s2.SeqNum(start.seq_num)
    if isinstance(start, Timestamp):
        return s2.Timestamp(start.timestamp)
    if isinstance(start, TailOffset):
        return s2.TailOffset(start.offset)
    raise TypeError(f"not a read start: {start!r}")


def to_sdk_limit(limit: ReadLimit) -> s2.ReadLimit:
    count, size = resolve_limit(limit)
    return s2.ReadLimit(count=count, bytes=size)


def map_error(error: BaseException, stream: str) -> BaseException:
    """The Parallax error an SDK error means (conditions, missing or existing streams, reads
    past the tail); anything else becomes an S2StoreError naming the stream."""
    if isinstance(error, s2.SeqNumMismatchError):
        return SeqNumMismatch(error.expected_seq_num, stream=stream)
    if isinstance(error, s2.FencingTokenMismatchError):
        return FencingTokenMismatch(error.expected_fencing_token, stream=stream)
    if isinstance(error, s2.ReadUnwrittenError):
        return ReadUnwritten(error.tail.seq_num, stream=stream)
    if isinstance(error, s2.S2ServerError):
        if error.code == "stream_not_found" or (error.status_code == 404 and "stream" in error.code):
            return StreamNotFound(stream)
        if error.code in ("resource_already_exists", "stream_exists") or error.status_code == 409:
            return StreamExists(stream)
        return S2StoreError(f"S2 refused an operation on {stream!r}: {error.code}: {error.message}")
    if isinstance(error, s2.S2Error):
        return S2StoreError(f"S2 client error on {stream!r}: {error}")
    return error


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class S2Store(StreamStore):
    """One S2 basin as a Parallax store."""

    def __init__(
        self,
        basin: str,
        *,
        access_token: str | None = None,
        endpoint: str | None = None,
        create_on_append: bool = True,
    ) -> None:
        token = access_token if access_token is not None else os.environ.get("S2_ACCESS_TOKEN", "")
        if not token and endpoint is None:
            raise StoreURLError("the S2 store needs an access token: set S2_ACCESS_TOKEN")
        endpoints = s2.Endpoints(account=endpoint, basin=endpoint) if endpoint else None
        self.url = f"s2://{basin}" + (f"?endpoint={endpoint}" if endpoint else "")
        self.basin_name = basin
        self.create_on_append = create_on_append
        self._client = s2.S2(token or "none", endpoints=endpoints)
        self._basin = self._client.basin(basin)
        self._config = s2.StreamConfig(timestamping=s2.Timestamping(mode=s2.TimestampingMode.CLIENT_PREFER))

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, stream: str, operation: Any) -> Any:
        try:
            return await operation
        except ParallaxError:
            raise
        except s2.S2Error as e:
            raise map_error(e, stream) from e

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        validate_stream_name(stream)
        validate_append(input)
        handle = self._basin.stream(stream)
        try:
            return from_sdk_ack(await self._call(stream, handle.append(to_sdk_input(input))))
        except StreamNotFound:
            if not self.create_on_append:
                raise
        with contextlib.suppress(StreamExists):
            await self.create(stream)
        return from_sdk_ack(await self._call(stream, handle.append(to_sdk_input(input))))

    async def read(
        self,
        stream: str,
        start: ReadStart = SeqNum(0),
        limit: ReadLimit = ReadLimit(),
        *,
        clamp: bool = False,
    ) -> ReadBatch:
        validate_stream_name(stream)
        handle = self._basin.stream(stream)
        count, _ = resolve_limit(limit)
        if count == 0:
            tail = await self._call(stream, handle.check_tail())
            return ReadBatch((), from_sdk_position(tail))
        batch = await self._call(
            stream, handle.read(start=to_sdk_start(start), limit=to_sdk_limit(limit), clamp_to_tail=clamp)
        )
        tail = batch.tail if batch.tail is not None else await self._call(stream, handle.check_tail())
        return ReadBatch(tuple(from_sdk_record(r) for r in batch.records), from_sdk_position(tail))

    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        validate_stream_name(stream)
        handle = self._basin.stream(stream)
        while True:
            tail = await self._call(stream, handle.check_tail())
            if tail.seq_num > beyond:
                return int(tail.seq_num)
            # A long poll: returns as soon as a record at `beyond` exists (or after `wait` s).
            await self._call(
                stream,
                handle.read(start=s2.SeqNum(beyond), limit=s2.ReadLimit(count=1), clamp_to_tail=True, wait=10),
            )

    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> builtins.list[StreamInfo]:
        page = await self._call(prefix, self._basin.list_streams(prefix=prefix, start_after=start_after, limit=limit))
        return [StreamInfo(info.name, _ms(info.created_at)) for info in page.items if info.deleted_at is None]

    async def create(self, stream: str) -> StreamInfo:
        validate_stream_name(stream)
        info = await self._call(stream, self._basin.create_stream(stream, config=self._config))
        return StreamInfo(info.name, _ms(info.created_at))

    async def delete(self, stream: str) -> None:
        validate_stream_name(stream)
        await self._call(stream, self._basin.delete_stream(stream))

    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        validate_stream_name(src)
        validate_stream_name(dst)
        tail = await self.check_tail(src)
        if at_seq < 0 or at_seq > tail.seq_num:
            raise ReadUnwritten(tail.seq_num, stream=src, start=at_seq)
        records = [r for r in await self.read_all(src) if r.seq_num < at_seq]
        if at_seq and (not records or records[0].seq_num != 0):
            raise S2StoreError(
                f"cannot fork {src!r} at {at_seq}: its records below the trim point are gone, and an S2 "
                "stream cannot start past seq_num 0"
            )
        info = await self.create(dst)
        for index in range(0, len(records), 1000):
            chunk = records[index : index + 1000]
            appended = [AppendRecord(body=r.body, headers=r.headers, timestamp=r.timestamp) for r in chunk]
            await self.append(dst, AppendInput(appended, match_seq_num=chunk[0].seq_num))
        return info


def open_s2(url: str) -> S2Store:
    """s2://BASIN[?endpoint=URL&create_on_append=true]"""
    body, _, query = url.partition("?")
    parsed = urlsplit(body)
    if not parsed.netloc:
        raise StoreURLError(f"store URL {url!r} names no basin; try s2://my-basin")
    options = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    endpoint = options.pop("endpoint", None)
    create = options.pop("create_on_append", "true").lower() in ("1", "true", "yes", "on")
    if options:
        raise StoreURLError(
            f"store URL {url!r}: unknown option(s) {', '.join(sorted(options))}; known: endpoint, create_on_append"
        )
    return S2Store(parsed.netloc, endpoint=endpoint, create_on_append=create)
