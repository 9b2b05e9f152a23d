"""Key-value buckets with compare-and-swap, for leases and the agent registry.

Every store has one: by default a bucket is the fold of the stream `kv/<bucket>` (a revision is
the seq_num of the record that wrote the key, plus one; a compare-and-swap is a conditional
append at the folded tail, re-decided when another writer got there first). The NATS store
uses JetStream's own key-value buckets instead (`NatsStore.kv`).
"""

from __future__ import annotations

import abc
import asyncio
import json
from dataclasses import dataclass

from parallax.core.errors import SeqNumMismatch, StreamError, StreamNotFound
from parallax.streams.base import AppendInput, AppendRecord, StreamStore


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


class StreamKeyValue(KeyValue):
    """A bucket folded from the stream `kv/<bucket>` of any store."""

    def __init__(self, store: StreamStore, bucket: str) -> None:
        self.store = store
        self.stream = f"kv/{bucket}"
        self._entries: dict[str, Entry] = {}
        self._tail = 0
        self._lock = asyncio.Lock()

    async def _sync(self) -> None:
        try:
            records = await self.store.read_all(self.stream, self._tail)
        except StreamNotFound:
            return
        for record in records:
            self._tail = record.seq_num + 1
            try:
                op = json.loads(record.body)
            except ValueError:
                continue
            key = op.get("key")
            if not isinstance(key, str):
                continue
            if op.get("op") == "del":
                self._entries.pop(key, None)
            else:
                self._entries[key] = Entry(key, str(op.get("value", "")).encode("latin-1"), record.seq_num + 1)

    async def _write(self, key: str, value: bytes | None, check: int | None) -> int:
        """Append the write at the folded tail if `check` holds (None: no check; 0: absent)."""
        async with self._lock:
            while True:
                await self._sync()
                current = self._entries.get(key)
                if check == 0 and current is not None:
                    raise KeyExists(key)
                if check and (current is None or current.revision != check):
                    raise RevisionMismatch(key, check, current.revision if current else 0)
                body = {"op": "del", "key": key} if value is None else {"op": "put", "key": key}
                if value is not None:
                    body["value"] = value.decode("latin-1")
                record = AppendRecord(json.dumps(body).encode())
                try:
                    ack = await self.store.append(self.stream, AppendInput([record], match_seq_num=self._tail))
                except SeqNumMismatch:
                    continue  # someone else wrote first: fold it and decide again
                return ack.start.seq_num + 1

    async def get(self, key: str) -> Entry | None:
        async with self._lock:
            await self._sync()
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
        async with self._lock:
            await self._sync()
            return [self._entries[k] for k in sorted(self._entries) if k.startswith(prefix)]
