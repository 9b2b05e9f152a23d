"""Key-value buckets with compare-and-swap, for leases and the agent registry.

Every store has one: by default a bucket is the fold of the stream `kv/<bucket>` (a revision is
the seq_num of the record that wrote the key, plus one; a compare-and-swap is a conditional
append at the folded tail, re-decided when another writer got there first). The NATS store
uses JetStream's own key-value buckets instead (`NatsStore.kv`).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass

from parallax.core.errors import StreamError
from parallax.streams.folded import FoldedStream, Streams
from parallax.streams.records import AppendRecord, Record


class KeyExists(StreamError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key


class RevisionMismatch(StreamError):
    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"key {key!r} is at revision {actual}, not {expected}")
        self.key = key
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    revision: int  # > 0, grows with every write to the bucket


class KeyValue(abc.ABC):
    """One bucket. Every write returns the new revision; `update` and `create` are atomic."""

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None: ...

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Write `key` only if it has no value. Raises KeyExists."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write `key` only if its revision is still `revision`. Raises RevisionMismatch."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> int: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def entries(self, prefix: str = "") -> list[Entry]:
        """Every live entry whose key starts with `prefix`, in key order."""


@dataclass(frozen=True, slots=True)
class KeyWrite:
    """One write of a stream-folded bucket: a put (value) or a delete (value None)."""

    key: str
    value: bytes | None
    seq_num: int = -1


class KeyWriteCodec:
    """How a bucket's writes are recorded: `{"op": "put"|"del", "key": ..., "value": latin-1}`."""

    def to_record(self, item: KeyWrite) -> AppendRecord:
        body: dict[str, str] = {"op": "del", "key": item.key} if item.value is None else {"op": "put", "key": item.key}
        if item.value is not None:
            body["value"] = item.value.decode("latin-1")
        return AppendRecord(json.dumps(body).encode())

    def from_record(self, record: Record) -> KeyWrite | None:
        try:
            op = json.loads(record.body)
        except ValueError:
            return None
        key = op.get("key") if isinstance(op, dict) else None
        if not isinstance(key, str):
            return None
        value = None if op.get("op") == "del" else str(op.get("value", "")).encode("latin-1")
        return KeyWrite(key, value, record.seq_num)

    def at(self, item: KeyWrite, seq_num: int, timestamp: int) -> KeyWrite:
        return KeyWrite(item.key, item.value, seq_num)


class StreamKeyValue(KeyValue):
    """A bucket folded from the stream `kv/<bucket>` of any store (a `FoldedStream`: every
    compare-and-swap is decided on the fresh fold and appended at its tail)."""

    def __init__(self, store: Streams, bucket: str) -> None:
        self.store = store
        self.stream = f"kv/{bucket}"
        self._entries: dict[str, Entry] = {}
        self._folded = FoldedStream(store, self.stream, self._apply, KeyWriteCodec())

    def _apply(self, write: KeyWrite) -> None:
        if write.value is None:
            self._entries.pop(write.key, None)
        else:
            self._entries[write.key] = Entry(write.key, write.value, write.seq_num + 1)

    async def _write(self, key: str, value: bytes | None, check: int | None) -> int:
        """Append the write at the folded tail if `check` holds (None: no check; 0: absent)."""

        def decide() -> list[KeyWrite]:
            current = self._entries.get(key)
            if check == 0 and current is not None:
                raise KeyExists(key)
            if check and (current is None or current.revision != check):
                raise RevisionMismatch(key, check, current.revision if current else 0)
            return [KeyWrite(key, value)]

        appended = await self._folded.decide_and_append(decide)
        assert appended is not None  # decide always has a write to make
        return appended.start + 1

    async def get(self, key: str) -> Entry | None:
        await self._folded.sync()
        return self._entries.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(key, value, 0)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        if revision <= 0:
            raise RevisionMismatch(key, revision, 0)
        return await self._write(key, value, revision)

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, None)

    async def delete(self, key: str) -> None:
        await self._write(key, None, None)

    async def entries(self, prefix: str = "") -> list[Entry]:
        await self._folded.sync()
        return [self._entries[k] for k in sorted(self._entries) if k.startswith(prefix)]
