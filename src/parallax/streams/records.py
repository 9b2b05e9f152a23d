"""The record types of the stream store boundary: records, appends, acknowledgements, read
positions and limits, and the S2 limits they obey. Pure data, no store: everything that reads
or writes streams (the store ABC, folded streams, codecs) imports these from here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

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
