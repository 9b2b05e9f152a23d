"""S2's append and read rules as pure functions, written once for every backend.

`validate_append` checks a batch against the limits before anything touches storage;
`apply_append` turns a validated batch plus the stream's state into the records to store and
the state after them, or raises the one error that says why the stream refused it.
No I/O happens here: backends load the state, call these, and persist the result atomically.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from parallax.core.errors import (
    FencingTokenMismatch,
    InvalidAppend,
    InvalidRead,
    InvalidStreamName,
    ReadUnwritten,
    SeqNumMismatch,
    StreamError,
)
from parallax.streams.base import (
    COMMAND_FENCE,
    COMMAND_TRIM,
    DEFAULT_READ_BYTES,
    DEFAULT_READ_COUNT,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    MAX_RECORD_BYTES,
    MAX_STREAM_NAME_BYTES,
    AppendInput,
    ReadLimit,
    ReadStart,
    Record,
    SeqNum,
    StreamState,
    TailOffset,
)


def now_ms() -> int:
    """Arrival time as S2 stamps it: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def validate_stream_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidStreamName("stream name must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_STREAM_NAME_BYTES:
        raise InvalidStreamName(f"stream name is longer than {MAX_STREAM_NAME_BYTES} bytes: {name[:40]!r}...")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidStreamName(f"stream name is not valid UTF-8: {name!r}") from e


def validate_append(input: AppendInput) -> int:
    """Check a batch against S2's limits; return its metered size. Raises InvalidAppend."""
    count = len(input.records)
    if count == 0:
        raise InvalidAppend("an append needs at least one record")
    if count > MAX_BATCH_RECORDS:
        raise InvalidAppend(f"an append holds at most {MAX_BATCH_RECORDS} records, this one has {count}")
    if input.match_seq_num is not None and input.match_seq_num < 0:
        raise InvalidAppend(f"match_seq_num must be >= 0, got {input.match_seq_num}")
    if input.fencing_token is not None and len(input.fencing_token.encode()) > MAX_FENCING_TOKEN_BYTES:
        raise InvalidAppend(f"a fencing token is at most {MAX_FENCING_TOKEN_BYTES} bytes")
    total = 0
    for index, record in enumerate(input.records):
        headers = record.headers
        body = record.body
        if type(body) is not bytes and not isinstance(body, bytes):
            raise InvalidAppend(f"record {index}: body must be bytes, got {type(body).__name__}")
        size = 8 + len(body) + 2 * len(headers)
        for name, value in headers:
            if (type(name) is not bytes or type(value) is not bytes) and not (
                isinstance(name, bytes) and isinstance(value, bytes)
            ):
                raise InvalidAppend(f"record {index}: header names and values must be bytes")
            size += len(name) + len(value)
            if not name:
                _validate_command(index, headers, body)
        if size > MAX_RECORD_BYTES:
            raise InvalidAppend(f"record {index} is {size} metered bytes; the limit is {MAX_RECORD_BYTES}")
        if record.timestamp is not None and record.timestamp < 0:
            raise InvalidAppend(f"record {index}: timestamp must be >= 0")
        total += size
    if total > MAX_BATCH_BYTES:
        raise InvalidAppend(f"the batch is {total} metered bytes; the limit is {MAX_BATCH_BYTES}")
    return total


def _validate_command(index: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
    if len(headers) != 1:
        raise InvalidAppend(
            f"record {index}: a header with an empty name marks a command record and must be its only header"
        )
    command = headers[0][1]
    if command == COMMAND_FENCE:
        if len(body) > MAX_FENCING_TOKEN_BYTES:
            raise InvalidAppend(f"record {index}: a fencing token is at most {MAX_FENCING_TOKEN_BYTES} bytes")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidAppend(f"record {index}: a fencing token must be UTF-8") from e
    elif command == COMMAND_TRIM:
        if len(body) != 8:
            raise InvalidAppend(f"record {index}: a trim command's body is an 8-byte big-endian seq_num")
    else:
        raise InvalidAppend(f"record {index}: unknown command {command!r} (expected b'fence' or b'trim')")


@dataclass(frozen=True, slots=True)
class AppliedAppend:
    records: list[Record]
    state: StreamState
    new_fences: list[tuple[int, str]]


def apply_append(stream: str, state: StreamState, input: AppendInput, now_ms: int) -> AppliedAppend:
    """The records an already-validated batch becomes, and the stream's state after it.

    Raises FencingTokenMismatch or SeqNumMismatch (checked in that order) without changing
    anything.
    """
    if input.fencing_token is not None and input.fencing_token != state.fencing_token:
        raise FencingTokenMismatch(state.fencing_token, stream=stream, given=input.fencing_token)
    if input.match_seq_num is not None and input.match_seq_num != state.next_seq:
        raise SeqNumMismatch(state.next_seq, stream=stream, given=input.match_seq_num)
    seq = state.next_seq
    last_ts = state.last_timestamp
    token = state.fencing_token
    trim_point = state.trim_point
    records: list[Record] = []
    fences: list[tuple[int, str]] = []
    for item in input.records:
        ts = now_ms if item.timestamp is None else min(item.timestamp, now_ms)
        if ts < last_ts:
            ts = last_ts
        last_ts = ts
        headers = tuple(item.headers)
        records.append(Record(seq, ts, headers, item.body))
        if len(headers) == 1 and headers[0][0] == b"":
            if headers[0][1] == COMMAND_FENCE:
                token = item.body.decode("utf-8")
                fences.append((seq, token))
            else:
                trim_point = max(trim_point, struct.unpack(">Q", item.body)[0])
        seq += 1
    trim_point = min(trim_point, seq)
    new_state = StreamState(
        next_seq=seq, last_timestamp=last_ts, fencing_token=token, trim_point=max(trim_point, state.trim_point)
    )
    return AppliedAppend(records, new_state, fences)


def resolve_limit(limit: ReadLimit) -> tuple[int, int]:
    """(count, bytes) with S2's defaults and caps applied."""
    count = DEFAULT_READ_COUNT if limit.count is None else limit.count
    size = DEFAULT_READ_BYTES if limit.bytes is None else limit.bytes
    if count < 0 or size < 0:
        raise InvalidRead(f"read limits must be >= 0, got count={limit.count} bytes={limit.bytes}")
    return min(count, DEFAULT_READ_COUNT), min(size, DEFAULT_READ_BYTES)


def resolve_seq_start(stream: str, start: ReadStart, state: StreamState, *, clamp: bool) -> int:
    """The first seq_num to read for a SeqNum or TailOffset start (timestamps need the records)."""
    tail = state.next_seq
    if isinstance(start, SeqNum):
        if start.seq_num < 0:
            raise InvalidRead(f"a read start must be >= 0, got {start.seq_num}")
        position = start.seq_num
        if position > tail:
            if not clamp:
                raise ReadUnwritten(tail, stream=stream, start=position)
            position = tail
    elif isinstance(start, TailOffset):
        if start.offset < 0:
            raise InvalidRead(f"a tail offset must be >= 0, got {start.offset}")
        position = max(0, tail - start.offset)
    else:
        raise InvalidRead(f"resolve_seq_start cannot place {start!r}")
    return max(position, state.trim_point)


def take_within_bytes(records: list[Record], max_bytes: int) -> list[Record]:
    """The longest prefix within `max_bytes` metered bytes, but never less than one record."""
    total = 0
    for index, record in enumerate(records):
        total += record.metered_bytes
        if total > max_bytes and index > 0:
            return records[:index]
    return records


def decide_group(
    stream: str, state: StreamState, inputs: list[AppendInput]
) -> tuple[list[tuple[int, int] | StreamError], list[Record], StreamState]:
    """Several appends checked in order, each against the state the ones before it leave (group
    commit): for each, (index of its first record, count) if accepted, or the error that refused
    it; then all accepted records, and the state after them."""
    outcomes: list[tuple[int, int] | StreamError] = []
    records: list[Record] = []
    running = state
    for input in inputs:
        try:
            applied = apply_append(stream, running, input, now_ms())
        except StreamError as e:
            outcomes.append(e)
            continue
        outcomes.append((len(records), len(applied.records)))
        records.extend(applied.records)
        running = applied.state
    return outcomes, records, running
