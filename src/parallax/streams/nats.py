"""NATS JetStream backend: the same stream semantics, on a server that scales out.

Layout (one JetStream stream per Parallax stream, as the S2 model wants):

- a Parallax stream `name` is the JetStream stream `<PREFIX>_<sha256(name)[:40]>` with the
  single subject `<prefix>.s.<same hash>`; the real name is kept in the stream's metadata and
  description (`nats stream ls` shows it). Hashing is needed because JetStream names may not
  hold `.`, `/`, spaces or more than a file name's length, and Parallax names may;
- record `seq_num` n is JetStream sequence n + 1 (JetStream counts from 1), so S2's contiguous
  numbering is JetStream's own; a fork starts its stream at the source's numbers (`first_seq`);
- every append, conditional or not, is published with `Nats-Expected-Last-Sequence` set to the
  sequence the writer last saw, so the server checks the position atomically with the write;
  a batch of records is one JetStream atomic batch (ADR-50, nats-server >= 2.12), all stored
  or none;
- a record's S2 headers, timestamp, and the stream state around it (fencing token before and
  after, trim point after) travel inside the message payload (NATS headers cannot carry an
  empty name or arbitrary bytes). The last message therefore *is* the stream's state, and a
  writer fences or matches against it under the expected-last-sequence check. That is why
  fencing does not need a separate KV entry: a KV compare-and-swap next to the append could
  not be made atomic with it, while the sequence check is;
- a trim purges physically up to the trim point but always keeps the newest message (it
  carries the state); readers start at the trim point, so a kept message below it is hidden.

An append whose acknowledgement is lost (server restart, timeout) is retried with the same
append id; if the retry finds the position taken, the record there is checked for that id, so
an append is neither lost nor written twice across reconnects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from parallax.core.errors import (
    BlobNotFound,
    ReadUnwritten,
    StoreURLError,
    StreamError,
    StreamExists,
    StreamNotFound,
)
from parallax.streams.base import (
    COMMAND_FENCE,
    COMMAND_TRIM,
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
from parallax.streams.kv import Entry, KeyExists, KeyValue, RevisionMismatch
from parallax.streams.semantics import (
    apply_append,
    now_ms,
    resolve_limit,
    resolve_seq_start,
    take_within_bytes,
    validate_append,
    validate_stream_name,
)

try:
    import nats
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.errors import ConnectionClosedError, NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
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
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the NATS backend needs nats-py: pip install 'parallax[nats]'") from e

_VERSION = 1
_FRAME = struct.Struct(">BQQ16sB")  # version, timestamp, trim point after, append id, len(token before)
_WRONG_LAST_SEQUENCE = 10071
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058
_NO_PEERS = 10005  # no suitable peers for placement (a clustered server is away)
_META_NAME = "parallax.name"
_META_CREATED = "parallax.created_at"
_META_BASE = "parallax.base"  # state of a stream created empty by a fork: next seq, ts, token, trim


class NatsStoreError(StreamError):
    """The NATS server refused or could not be reached; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class _Frame:
    timestamp: int
    trim_after: int
    append_id: bytes
    token_before: str
    token_after: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def encode_frame(
    timestamp: int,
    trim_after: int,
    append_id: bytes,
    token_before: str,
    token_after: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> bytes:
    """One record as a message payload (see the module docstring)."""
    before = token_before.encode()
    after = token_after.encode()
    parts = [_FRAME.pack(_VERSION, timestamp, trim_after, append_id, len(before)), before, bytes([len(after)]), after]
    parts.append(struct.pack(">H", len(headers)))
    for name, value in headers:
        parts.append(struct.pack(">II", len(name), len(value)))
        parts.append(name)
        parts.append(value)
    parts.append(body)
    return b"".join(parts)


def decode_frame(payload: bytes) -> _Frame:
    version, timestamp, trim_after, append_id, before_len = _FRAME.unpack_from(payload, 0)
    if version != _VERSION:
        raise NatsStoreError(f"a message has frame version {version}; this Parallax reads version {_VERSION}")
    offset = _FRAME.size
    before = payload[offset : offset + before_len].decode()
    offset += before_len
    after_len = payload[offset]
    offset += 1
    after = payload[offset : offset + after_len].decode()
    offset += after_len
    (count,) = struct.unpack_from(">H", payload, offset)
    offset += 2
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        name_len, value_len = struct.unpack_from(">II", payload, offset)
        offset += 8
        name = payload[offset : offset + name_len]
        offset += name_len
        headers.append((name, payload[offset : offset + value_len]))
        offset += value_len
    return _Frame(timestamp, trim_after, append_id, before, after, tuple(headers), payload[offset:])


@dataclass
class _Watch:
    subscription: Any = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:40]


class NatsStore(StreamStore):
    """Streams on NATS JetStream. `servers` is one URL or several (a cluster)."""

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "PX",
        replicas: int = 1,
        storage: str = "file",
        create_on_append: bool = True,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        user_credentials: str | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.url = ",".join(self.servers)
        if not prefix.isalnum():
            raise StoreURLError(f"NATS prefix must be letters and digits, got {prefix!r}")
        self.prefix = prefix
        self.subject_prefix = prefix.lower()
        self.replicas = replicas
        self.storage = StorageType.MEMORY if storage == "memory" else StorageType.FILE
        self.create_on_append = create_on_append
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.user_credentials = user_credentials
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tips: dict[str, StreamState] = {}
        self._watches: dict[str, _Watch] = {}
        self._object_store: ObjectStore | None = None  # what this client last saw of each stream
        self._closed = False

    # Connection

    async def connection(self) -> tuple[NatsClient, JetStreamContext]:
        """The connected client (connecting on first use; reconnects are automatic)."""
        if self._nc is not None and self._js is not None and not self._nc.is_closed:
            return self._nc, self._js
        async with self._connecting:
            if self._nc is None or self._nc.is_closed or self._js is None:
                if self._closed:
                    raise NatsStoreError("the NATS store is closed")
                try:
                    # The first connection must succeed within the timeout; later drops are
                    # reconnected forever (max_reconnect_attempts=-1) while requests wait.
                    self._nc = await asyncio.wait_for(self._connect(), self.connect_timeout * 2 + 1)
                except Exception as e:
                    raise NatsStoreError(
                        f"cannot connect to NATS at {self.url}: {e or type(e).__name__}. "
                        "Start one with: nats-server -js -a 127.0.0.1"
                    ) from e
                self._js = self._nc.jetstream(timeout=self.timeout)
            assert self._nc is not None
            assert self._js is not None
            return self._nc, self._js

    async def _connect(self) -> NatsClient:
        return await nats.connect(
            servers=self.servers,
            connect_timeout=self.connect_timeout,
            drain_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            user_credentials=self.user_credentials,
            error_cb=_ignore_error,
            disconnected_cb=_noop,
            reconnected_cb=_noop,
            closed_cb=_noop,
        )

    async def close(self) -> None:
        self._closed = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception:  # already disconnected: close is all that is left
                await self._nc.close()

    def kv(self, bucket: str) -> KeyValue:
        """A JetStream key-value bucket (`<PREFIX>_<bucket>`), created on first use."""
        buckets: dict[str, KeyValue] = self.__dict__.setdefault("_kv_buckets", {})
        if bucket not in buckets:
            buckets[bucket] = NatsKeyValue(self, f"{self.prefix}_{bucket}")
        return buckets[bucket]

    async def put_blob(self, data: bytes) -> str:
        """Blobs go to the JetStream object store `<PREFIX>_blobs`, named by their sha256."""
        digest = hashlib.sha256(data).hexdigest()
        store = await self._objects()
        try:
            await store.get_info(digest)
        except ObjectNotFoundError:
            await store.put(digest, data)
        return f"sha256:{digest}"

    async def get_blob(self, ref: str) -> bytes:
        digest = ref.removeprefix("sha256:")
        store = await self._objects()
        try:
            result = await store.get(digest)
        except ObjectNotFoundError:
            raise BlobNotFound(ref) from None
        data = result.data or b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobNotFound(ref)
        return data

    async def _objects(self) -> ObjectStore:
        if self._object_store is None:
            _, js = await self.connection()
            bucket = f"{self.prefix}_blobs"
            try:
                self._object_store = await js.object_store(bucket)
            except BucketNotFoundError:
                self._object_store = await js.create_object_store(
                    bucket, config=ObjectStoreConfig(bucket=bucket, storage=self.storage, replicas=self.replicas)
                )
        return self._object_store

    def js_name(self, stream: str) -> str:
        return f"{self.prefix}_{_hash(stream)}"

    def subject(self, stream: str) -> str:
        return f"{self.subject_prefix}.s.{_hash(stream)}"

    # Requests that survive a server restart

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
        """A request retried while the server is away (reconnecting), up to the store's timeout x 6."""
        nc, _ = await self.connection()
        deadline = time.monotonic() + self.timeout * 6
        while True:
            try:
                return await nc.request(subject, payload, timeout=self.timeout, headers=headers)
            except (NatsTimeout, NoRespondersError, ConnectionClosedError, OSError) as e:
                if isinstance(e, NoRespondersError) and subject.startswith("$JS.API.DIRECT.GET."):
                    raise  # no stream answers: the caller decides whether that means "missing"
                if time.monotonic() > deadline or self._closed:
                    raise NatsStoreError(f"NATS at {self.url} did not answer {subject.split('.')[2]} in time") from e
                await asyncio.sleep(0.1)

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = await self._request(f"$JS.API.{subject}", json.dumps(body or {}).encode())
        response: dict[str, Any] = json.loads(msg.data)
        return response

    # State

    async def _fetch_state(self, stream: str) -> StreamState:
        """The stream's state from its newest message (one direct get), or from its info if empty."""
        name = self.js_name(stream)
        try:
            msg = await self._request(f"$JS.API.DIRECT.GET.{name}.{self.subject(stream)}", b"")
        except NoRespondersError:
            raise StreamNotFound(stream) from None
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            frame = decode_frame(msg.data)
            seq = int(msg.headers["Nats-Sequence"]) if msg.headers else 0
            state = StreamState(seq, frame.timestamp, frame.token_after, max(frame.trim_after, 0))
        elif status == "404":
            state = await self._empty_state(stream)
        else:
            raise NatsStoreError(f"direct get on {stream!r} answered {status}")
        self._tips[stream] = state
        return state

    async def _info(self, stream: str) -> dict[str, Any]:
        response = await self._api(f"STREAM.INFO.{self.js_name(stream)}")
        error = response.get("error")
        if error:
            if error.get("err_code") == _STREAM_NOT_FOUND or error.get("code") == 404:
                raise StreamNotFound(stream)
            raise NatsStoreError(f"stream info for {stream!r}: {error.get('description')}")
        return response

    async def _empty_state(self, stream: str) -> StreamState:
        info = await self._info(stream)
        base = (info["config"].get("metadata") or {}).get(_META_BASE)
        last_seq = int(info["state"].get("last_seq", 0))
        if base:
            next_seq, ts, token, trim = json.loads(base)
            return StreamState(max(next_seq, last_seq), ts, token, trim)
        return StreamState(last_seq, 0, "", 0)

    # Creation

    async def _add_stream(self, stream: str, *, first_seq: int = 0, base: StreamState | None = None) -> StreamInfo:
        created = now_ms()
        metadata = {_META_NAME: stream, _META_CREATED: str(created)}
        if base is not None:
            metadata[_META_BASE] = json.dumps([base.next_seq, base.last_timestamp, base.fencing_token, base.trim_point])
        config = StreamConfig(
            name=self.js_name(stream),
            subjects=[self.subject(stream)],
            description=stream[:1000],
            storage=self.storage,
            num_replicas=self.replicas,
            allow_direct=True,
            allow_atomic=True,
            first_seq=first_seq + 1 if first_seq else None,
            metadata=metadata,
        )
        deadline = time.monotonic() + self.timeout * 6
        while True:
            response = await self._api(f"STREAM.CREATE.{config.name}", config.as_dict())
            error = response.get("error")
            if not (error and error.get("err_code") == _NO_PEERS and time.monotonic() < deadline):
                break
            await asyncio.sleep(0.25)  # a clustered server is away: its replica place is not ready
        if error:
            if error.get("err_code") == _STREAM_NAME_IN_USE:
                raise StreamExists(stream)
            raise NatsStoreError(f"creating {stream!r}: {error.get('description')}")
        return StreamInfo(stream, created)

    async def create(self, stream: str) -> StreamInfo:
        validate_stream_name(stream)
        return await self._add_stream(stream)

    async def delete(self, stream: str) -> None:
        validate_stream_name(stream)
        response = await self._api(f"STREAM.DELETE.{self.js_name(stream)}")
        self._tips.pop(stream, None)
        error = response.get("error")
        if error:
            if error.get("err_code") == _STREAM_NOT_FOUND or error.get("code") == 404:
                raise StreamNotFound(stream)
            raise NatsStoreError(f"deleting {stream!r}: {error.get('description')}")

    # Appends

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        validate_stream_name(stream)
        validate_append(input)
        # One append per stream at a time from this client: they would only race each other for
        # the same position (and JetStream caps atomic batches in flight per stream).
        lock = self._locks.get(stream)
        if lock is None:
            lock = self._locks[stream] = asyncio.Lock()
        async with lock:
            return await self._append(stream, input)

    async def _append(self, stream: str, input: AppendInput) -> AppendAck:
        append_id = secrets.token_bytes(16)
        maybe_landed = False
        fresh = False
        while True:
            cached = self._tips.get(stream)
            if cached is None or fresh:
                try:
                    state = await self._fetch_state(stream)
                except StreamNotFound:
                    if not self.create_on_append:
                        raise
                    apply_append(stream, StreamState(), input, now_ms())  # a refused append creates nothing
                    with contextlib.suppress(StreamExists):
                        await self._add_stream(stream)
                    fresh = True
                    continue
            else:
                state = cached
            try:
                applied = apply_append(stream, state, input, now_ms())
            except StreamError:
                if not fresh:  # a cached state may be stale: decide on the server's
                    fresh = True
                    continue
                raise
            payloads = []
            token = state.fencing_token
            trim = state.trim_point
            for record in applied.records:
                before = token
                command = record.command
                if command == COMMAND_FENCE:
                    token = record.body.decode()
                elif command == COMMAND_TRIM:
                    trim = max(trim, struct.unpack(">Q", record.body)[0])
                trim_after = min(trim, record.seq_num + 1)
                payloads.append(
                    encode_frame(record.timestamp, trim_after, append_id, before, token, record.headers, record.body)
                )
            try:
                error = await self._publish(stream, payloads, state.next_seq)
            except NatsStoreError:
                raise
            except (NatsTimeout, ConnectionClosedError, OSError, NoRespondersError):
                maybe_landed = True  # the server may have stored it before the connection dropped
                fresh = True
                await asyncio.sleep(0.1)
                continue
            if error is None:
                self._tips[stream] = applied.state
                if applied.state.trim_point > state.trim_point:
                    await self._purge(stream, applied.state)
                first, last = applied.records[0], applied.records[-1]
                return AppendAck(
                    StreamPosition(first.seq_num, first.timestamp),
                    StreamPosition(last.seq_num + 1, last.timestamp),
                    StreamPosition(applied.state.next_seq, applied.state.last_timestamp),
                )
            code = error.get("err_code")
            if code == _WRONG_LAST_SEQUENCE:
                if maybe_landed:
                    landed = await self._landed(stream, state.next_seq, append_id, len(payloads))
                    if landed is not None:
                        return landed
                fresh = True
                continue
            if code == _STREAM_NOT_FOUND or error.get("code") == 404:
                self._tips.pop(stream, None)
                if not self.create_on_append:
                    raise StreamNotFound(stream)
                fresh = True
                continue
            if "inflight" in str(error.get("description")):  # other clients' batches: back off, retry
                await asyncio.sleep(0.005 + secrets.randbelow(20) / 1000)
                fresh = True
                continue
            raise NatsStoreError(f"append to {stream!r} refused by NATS: {error.get('description')}")

    async def _publish(self, stream: str, payloads: list[bytes], expected_last: int) -> dict[str, Any] | None:
        """Publish one message, or an atomic batch; None on success, else the server's error."""
        subject = self.subject(stream)
        nc, _ = await self.connection()
        if max(len(p) for p in payloads) > nc.max_payload:
            raise NatsStoreError(
                f"a record of {max(len(p) for p in payloads)} bytes is over this NATS server's max_payload "
                f"({nc.max_payload}); Parallax records go up to 1 MiB: set max_payload: 2MB in nats-server.conf"
            )
        expect = {"Nats-Expected-Last-Sequence": str(expected_last)}
        if len(payloads) == 1:
            reply = await nc.request(subject, payloads[0], timeout=self.timeout, headers=expect)
        else:
            batch = secrets.token_hex(12)
            last = len(payloads)
            first = await nc.request(
                subject,
                payloads[0],
                timeout=self.timeout,
                headers={"Nats-Batch-Id": batch, "Nats-Batch-Sequence": "1", **expect},
            )
            if first.data:  # an error already: nothing of the batch is kept
                return _error_of(first.data)
            for index in range(2, last):
                await nc.publish(
                    subject, payloads[index - 1], headers={"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(index)}
                )
            reply = await nc.request(
                subject,
                payloads[-1],
                timeout=self.timeout,
                headers={"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(last), "Nats-Batch-Commit": "1"},
            )
        return _error_of(reply.data)

    async def _landed(self, stream: str, start: int, append_id: bytes, count: int) -> AppendAck | None:
        """After a lost acknowledgement: the ack of our append if it is the one at `start`."""
        records = await self._direct_batch(stream, start, count, None)
        if len(records) != count or any(frame.append_id != append_id for _, frame in records):
            return None
        state = await self._fetch_state(stream)
        first, last = records[0], records[-1]
        return AppendAck(
            StreamPosition(first[0], first[1].timestamp),
            StreamPosition(last[0] + 1, last[1].timestamp),
            StreamPosition(state.next_seq, state.last_timestamp),
        )

    async def _purge(self, stream: str, state: StreamState) -> None:
        """Drop trimmed messages, keeping the newest (it carries the state). Best effort: readers
        start at the trim point whether or not the purge happened."""
        keep_from = min(state.trim_point, state.next_seq - 1)
        if keep_from <= 0:
            return
        with contextlib.suppress(NatsStoreError):
            await self._api(f"STREAM.PURGE.{self.js_name(stream)}", {"seq": keep_from + 1})

    # Reads

    async def _direct_batch(
        self, stream: str, start: int, count: int, max_bytes: int | None
    ) -> builtins.list[tuple[int, _Frame]]:
        """Up to `count` records from seq `start`, in one direct batch get."""
        frames, _ = await self._direct_batch_pending(stream, start, count, max_bytes)
        return frames

    async def _direct_batch_pending(
        self, stream: str, start: int, count: int, max_bytes: int | None
    ) -> tuple[builtins.list[tuple[int, _Frame]], int | None]:
        """`_direct_batch`, and how many messages the server still had after the last one
        returned (None when it did not say)."""
        nc, _ = await self.connection()
        request: dict[str, Any] = {"seq": start + 1, "batch": count}
        if max_bytes is not None:
            request["max_bytes"] = max_bytes
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: builtins.list[tuple[int, _Frame]] = []
        pending: int | None = None
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.{self.js_name(stream)}", json.dumps(request).encode(), reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.timeout)
                except NatsTimeout as e:
                    raise NatsStoreError(f"NATS at {self.url} did not answer a read of {stream!r} in time") from e
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is not None:
                    if status in ("204", "404"):
                        return out, pending
                    if status == "503":
                        raise StreamNotFound(stream)
                    raise NatsStoreError(f"reading {stream!r}: NATS answered {status} {headers.get('Description')}")
                out.append((int(headers["Nats-Sequence"]) - 1, decode_frame(msg.data)))
                left = headers.get("Nats-Num-Pending")
                pending = int(left) if left is not None else None
                if len(out) >= count:
                    return out, pending
        finally:
            await sub.unsubscribe()

    async def read(
        self,
        stream: str,
        start: ReadStart = SeqNum(0),
        limit: ReadLimit = ReadLimit(),
        *,
        clamp: bool = False,
    ) -> ReadBatch:
        validate_stream_name(stream)
        count, max_bytes = resolve_limit(limit)
        if isinstance(start, SeqNum) and start.seq_num >= 0 and count > 0:
            # Fast path (tailing): one round trip when the batch reaches the newest message,
            # whose frame is the stream's state (tail, last timestamp, trim point).
            frames, pending = await self._direct_batch_pending(
                stream, start.seq_num, count, max_bytes + count * 128 + 1024
            )
            if frames and pending == 0:
                last_seq, last = frames[-1]
                trim = min(last.trim_after, last_seq + 1)
                records = [Record(seq, f.timestamp, f.headers, f.body) for seq, f in frames if seq >= trim]
                tail = StreamPosition(last_seq + 1, last.timestamp)
                return ReadBatch(tuple(take_within_bytes(records, max_bytes)), tail)
        state = await self._fetch_state(stream)
        tail = StreamPosition(state.next_seq, state.last_timestamp)
        if isinstance(start, Timestamp):
            position = await self._seek_timestamp(stream, start.timestamp, state)
        else:
            position = resolve_seq_start(stream, start, state, clamp=clamp)
        if count == 0 or position >= state.next_seq:
            return ReadBatch((), tail)
        # Message sizes exceed metered sizes by the frame; ask for a little more, cut exactly below.
        frames = await self._direct_batch(stream, position, count, max_bytes + count * 128 + 1024)
        records = [Record(seq, f.timestamp, f.headers, f.body) for seq, f in frames if seq >= state.trim_point]
        return ReadBatch(tuple(take_within_bytes(records, max_bytes)), tail)

    async def _seek_timestamp(self, stream: str, timestamp: int, state: StreamState) -> int:
        """The first readable seq whose timestamp is >= `timestamp` (timestamps never decrease)."""
        low, high = state.trim_point, state.next_seq
        while low < high:
            middle = (low + high) // 2
            frames = await self._direct_batch(stream, middle, 1, None)
            if not frames:
                low = middle + 1
                continue
            seq, frame = frames[0]
            if frame.timestamp < timestamp:
                low = seq + 1
            else:
                high = middle
        return low

    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        validate_stream_name(stream)
        watch = await self._watch(stream)
        try:
            while True:
                changed = watch.changed
                state = await self._fetch_state(stream)
                if state.next_seq > beyond:
                    return state.next_seq
                # A message on the subject wakes us at once; the timeout covers a restart of
                # the server (the subscription is replayed on reconnect) and a delete.
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives just as the event is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await changed.wait()
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                self._watches.pop(stream, None)
                with contextlib.suppress(ConnectionClosedError, NatsTimeout, NatsStoreError):
                    await watch.subscription.unsubscribe()

    async def _watch(self, stream: str) -> _Watch:
        """One core subscription per watched stream, shared by every waiter in this client."""
        watch = self._watches.get(stream)
        if watch is None:
            nc, _ = await self.connection()
            watch = self._watches.get(stream)  # another waiter may have subscribed meanwhile
            if watch is None:
                fresh = _Watch()

                async def wake(_: Msg) -> None:
                    fresh.changed.set()
                    fresh.changed = asyncio.Event()

                fresh.subscription = await nc.subscribe(self.subject(stream), cb=wake)
                watch = self._watches.setdefault(stream, fresh)
                if watch is not fresh:
                    await fresh.subscription.unsubscribe()
        watch.waiters += 1
        return watch

    # Listing and forks

    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> builtins.list[StreamInfo]:
        found: builtins.list[StreamInfo] = []
        offset = 0
        while True:
            response = await self._api("STREAM.LIST", {"offset": offset, "subject": f"{self.subject_prefix}.s.>"})
            if "error" in response:
                raise NatsStoreError(f"listing streams: {response['error'].get('description')}")
            streams = response.get("streams") or []
            for info in streams:
                metadata = info["config"].get("metadata") or {}
                name = metadata.get(_META_NAME)
                if name is None or not name.startswith(prefix) or name <= start_after:
                    continue
                found.append(StreamInfo(name, int(metadata.get(_META_CREATED, 0))))
            offset += len(streams)
            if not streams or offset >= int(response.get("total", 0)):
                break
        found.sort(key=lambda info: info.name)
        return found[:limit]

    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        validate_stream_name(src)
        validate_stream_name(dst)
        state = await self._fetch_state(src)
        try:
            await self._info(dst)
        except StreamNotFound:
            pass
        else:
            raise StreamExists(dst)
        if at_seq < 0 or at_seq > state.next_seq:
            raise ReadUnwritten(state.next_seq, stream=src, start=at_seq)
        start = min(state.trim_point, at_seq)
        frames: builtins.list[tuple[int, _Frame]] = []
        position = start
        while position < at_seq:
            batch = await self._direct_batch(src, position, min(1000, at_seq - position), None)
            if not batch:
                break
            frames.extend((seq, f) for seq, f in batch if seq < at_seq)
            position = batch[-1][0] + 1
        if frames:
            last = frames[-1][1]
            base = StreamState(at_seq, last.timestamp, last.token_after, min(state.trim_point, at_seq))
        else:
            # Nothing readable below at_seq: the state there is the stream's own (at the tail), or
            # the token the first kept record started from (a fork inside a trimmed prefix).
            after = await self._direct_batch(src, at_seq, 1, None) if at_seq < state.next_seq else []
            token = after[0][1].token_before if after else state.fencing_token
            ts = state.last_timestamp if at_seq == state.next_seq else 0
            base = StreamState(at_seq, ts, token, min(state.trim_point, at_seq))
        first = frames[0][0] if frames else at_seq
        info = await self._add_stream(dst, first_seq=first, base=base)
        expected = first
        for index in range(0, len(frames), 1000):
            chunk = frames[index : index + 1000]
            payloads = [
                encode_frame(
                    f.timestamp,
                    base.trim_point if seq == at_seq - 1 else min(f.trim_after, base.trim_point),
                    f.append_id,
                    f.token_before,
                    f.token_after,
                    f.headers,
                    f.body,
                )
                for seq, f in chunk
            ]
            error = await self._publish(dst, payloads, expected)
            if error is not None:
                raise NatsStoreError(f"copying {src!r} into {dst!r}: {error.get('description')}")
            expected += len(chunk)
        return info


_KEY_SAFE = frozenset("-/_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def encode_key(key: str) -> str:
    """A JetStream KV key for any string: safe characters kept, the rest (and `=`) as =XX bytes."""
    out = []
    for char in key:
        if char in _KEY_SAFE:
            out.append(char)
        else:
            out.extend(f"={byte:02X}" for byte in char.encode())
    return "".join(out) or "=00"


def decode_key(key: str) -> str:
    if key == "=00":
        return ""
    raw = bytearray()
    index = 0
    while index < len(key):
        if key[index] == "=":
            raw.append(int(key[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.extend(key[index].encode())
            index += 1
    return raw.decode()


class NatsKeyValue(KeyValue):
    """A JetStream KV bucket (history 1); operations are retried while the server restarts."""

    def __init__(self, store: NatsStore, bucket: str) -> None:
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
                    raise NatsStoreError(f"NATS KV {self.bucket} did not answer in time") from e
                await asyncio.sleep(0.1)
            except APIError as e:
                # A cluster still placing replicas (a node restarting) answers "peer offline".
                if e.err_code == _NO_PEERS and time.monotonic() < deadline:
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


def _error_of(data: bytes) -> dict[str, Any] | None:
    if not data:
        return None
    response = json.loads(data)
    error = response.get("error")
    return error if isinstance(error, dict) else None


async def _ignore_error(_: Exception) -> None:
    """Connection errors are handled where requests fail; the client reconnects on its own."""


async def _noop() -> None:
    return None


def open_nats(url: str) -> NatsStore:
    """nats://host:port[,host:port...][?replicas=3&storage=file|memory&prefix=PX&create_on_append=true]"""
    body, _, query = url.partition("?")
    parsed = urlsplit(body)
    hosts = [h for h in parsed.netloc.split(",") if h]
    if not hosts:
        raise StoreURLError(f"store URL {url!r} names no NATS server; try nats://127.0.0.1:4222")
    if parsed.path not in ("", "/"):
        raise StoreURLError(f"store URL {url!r}: a NATS URL has no path (got {parsed.path!r})")
    options = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    servers = [f"nats://{h}" for h in hosts]
    try:
        replicas = int(options.pop("replicas", "1"))
    except ValueError:
        raise StoreURLError(f"store URL {url!r}: replicas must be a number") from None
    if not 1 <= replicas <= 5:
        raise StoreURLError(f"store URL {url!r}: replicas must be 1..5, got {replicas}")
    storage = options.pop("storage", "file")
    if storage not in ("file", "memory"):
        raise StoreURLError(f"store URL {url!r}: storage must be file or memory, got {storage!r}")
    prefix = options.pop("prefix", "PX")
    create = options.pop("create_on_append", "true").lower() in ("1", "true", "yes", "on")
    credentials = options.pop("creds", None)
    if options:
        raise StoreURLError(
            f"store URL {url!r}: unknown option(s) {', '.join(sorted(options))}; "
            "known: replicas, storage, prefix, create_on_append, creds"
        )
    return NatsStore(
        servers,
        prefix=prefix,
        replicas=replicas,
        storage=storage,
        create_on_append=create,
        user_credentials=credentials,
    )


__all__ = ["NatsStore", "NatsStoreError", "decode_frame", "encode_frame", "open_nats"]
