"""Durable, append-only streams with S2 semantics. See `base.py` for the guarantees."""

from parallax.streams.base import (
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
    StreamStore,
    TailOffset,
    Timestamp,
    metered_size,
)
from parallax.streams.url import open_store

__all__ = [
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
    "StreamStore",
    "TailOffset",
    "Timestamp",
    "metered_size",
    "open_store",
]
