"""JetStream's key-value and object stores behind Parallax's buckets and blobs.

Both work through `BucketHost`, the connection and settings of the NATS store they belong to
(`streams/nats.py`), so this module does not depend on that store."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import time
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    ObjectNotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue as NatsBucket
from nats.js.object_store import ObjectStore

from parallax.core.errors import BlobNotFound
from parallax.streams.kv import Entry, KeyExists, KeyValue, RevisionMismatch
from parallax.streams.nats_codec import NatsStoreError, NatsUnavailable, decode_key, encode_key

NO_PEERS = 10005  # no suitable peers for placement (a clustered server is away)


class BucketHost(Protocol):
    """What buckets and blobs need of the NATS store: its connection, name prefix, storage,
    replication and timeout."""

    @property
    def prefix(self) -> str: ...

    @property
    def storage(self) -> StorageType: ...

    @property
    def replicas(self) -> int: ...

    @property
    def timeout(self) -> float: ...

    async def connection(self) -> tuple[NatsClient, JetStreamContext]: ...


class NatsKeyValue(KeyValue):
    """A JetStream KV bucket (history 1); operations are retried while the server restarts."""

    def __init__(self, store: BucketHost, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self._kv: NatsBucket | None = None

    async def _bucket(self) -> NatsBucket:
        if self._kv is None:
            _, js = await self.store.connection()
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=self.bucket,
                        history=1,
                        storage=self.store.storage,
                        replicas=self.store.replicas,
                    )
                )
        return self._kv

    async def _retry(self, operation: Any) -> Any:
        deadline = time.monotonic() + self.store.timeout * 6
        while True:
            try:
                return await operation(await self._bucket())
            except (NatsTimeout, ConnectionClosedError, NoRespondersError, OSError, ServiceUnavailableError) as e:
                if time.monotonic() > deadline:
                    raise NatsUnavailable(f"NATS KV {self.bucket} did not answer in time") from e
                await asyncio.sleep(0.1)
            except APIError as e:
                # A cluster still placing replicas (a node restarting) answers "peer offline".
                if e.err_code == NO_PEERS and time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    continue
                raise NatsStoreError(f"NATS KV {self.bucket}: {e.description}") from e

    async def get(self, key: str) -> Entry | None:
        async def op(kv: NatsBucket) -> Entry | None:
            try:
                entry = await kv.get(encode_key(key))
            except KeyNotFoundError:
                return None
            return Entry(key, entry.value or b"", entry.revision or 0)

        result: Entry | None = await self._retry(op)
        return result

    async def create(self, key: str, value: bytes) -> int:
        async def op(kv: NatsBucket) -> int:
            try:
                return int(await kv.create(encode_key(key), value))
            except KeyWrongLastSequenceError:
                raise KeyExists(key) from None

        return int(await self._retry(op))

    async def update(self, key: str, value: bytes, revision: int) -> int:
        async def op(kv: NatsBucket) -> int:
            try:
                return int(await kv.update(encode_key(key), value, last=revision))
            except KeyWrongLastSequenceError:
                current = await self.get(key)
                raise RevisionMismatch(key, revision, current.revision if current else 0) from None

        return int(await self._retry(op))

    async def put(self, key: str, value: bytes) -> int:
        return int(await self._retry(lambda kv: kv.put(encode_key(key), value)))

    async def delete(self, key: str) -> None:
        await self._retry(lambda kv: kv.delete(encode_key(key)))

    async def entries(self, prefix: str = "") -> builtins.list[Entry]:
        async def keys(kv: NatsBucket) -> builtins.list[str]:
            try:
                return builtins.list(await kv.keys())
            except NoKeysError:
                return []

        names = sorted(decode_key(k) for k in await self._retry(keys))
        out: builtins.list[Entry] = []
        for name in names:
            if name.startswith(prefix):
                entry = await self.get(name)
                if entry is not None:
                    out.append(entry)
        return out


class NatsBlobs:
    """Blobs in the JetStream object store `<PREFIX>_blobs`, named by their sha256."""

    def __init__(self, store: BucketHost) -> None:
        self.store = store
        self._object_store: ObjectStore | None = None

    async def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        objects = await self._objects()
        try:
            await objects.get_info(digest)
        except ObjectNotFoundError:
            await objects.put(digest, data)
        return f"sha256:{digest}"

    async def get(self, ref: str) -> bytes:
        digest = ref.removeprefix("sha256:")
        objects = await self._objects()
        try:
            result = await objects.get(digest)
        except ObjectNotFoundError:
            raise BlobNotFound(ref) from None
        data = result.data or b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobNotFound(ref)
        return data

    async def delete(self, ref: str) -> None:
        objects = await self._objects()
        with contextlib.suppress(ObjectNotFoundError):
            await objects.delete(ref.removeprefix("sha256:"))

    async def _objects(self) -> ObjectStore:
        if self._object_store is None:
            _, js = await self.store.connection()
            bucket = f"{self.store.prefix}_blobs"
            try:
                self._object_store = await js.object_store(bucket)
            except BucketNotFoundError:
                config = ObjectStoreConfig(bucket=bucket, storage=self.store.storage, replicas=self.store.replicas)
                self._object_store = await js.create_object_store(bucket, config=config)
        return self._object_store
