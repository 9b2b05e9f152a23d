"""NATS JetStream backend: the same stream semantics, on servers that scale out.

One JetStream stream per Parallax stream (`<PREFIX>_<sha256(name)[:40]>`, the real name in its
metadata); seq_num n is JetStream sequence n + 1; every append is published with
`Nats-Expected-Last-Sequence` (a batch as one atomic batch, ADR-50, nats-server >= 2.12); a
record's headers, timestamp and the stream state around it (fencing token before and after,
trim point after) travel in its payload frame (`nats_codec`), so the newest message *is* the
stream's state and fencing is checked under the server's sequence check. A trim purges up to
the trim point but keeps the newest message. An append whose acknowledgement is lost is
retried; if its position is taken, the record there is checked for the append's id, so nothing
is lost or written twice. The why of each choice: docs/distributed.md.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from parallax.core.errors import (
    StoreURLError,
    StreamError,
    StreamExists,
    StreamNotFound,
)
from parallax.streams.base import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
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
from parallax.streams.kv import KeyValue
from parallax.streams.semantics import (
    decide_group,
    now_ms,
    resolve_limit,
    resolve_seq_start,
    take_within_bytes,
    validate_append,
    validate_stream_name,
)

try:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.errors import ConnectionClosedError, NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import StorageType, StreamConfig
    from nats.js.client import JetStreamContext
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the NATS backend needs nats-py: pip install 'parallax[nats]'") from e

from parallax.streams.nats_buckets import NO_PEERS as _NO_PEERS
from parallax.streams.nats_buckets import NatsBlobs, NatsKeyValue
from parallax.streams.nats_codec import (
    Frame,
    NatsStoreError,
    NatsUnavailable,
    decode_frame,
    encode_frame,
    frames_for,
    parse_nats_url,
    stream_hash,
)
from parallax.streams.nats_connection import NatsConnection, keep_cancellation
from parallax.streams.nats_fork import fork_stream

_WRONG_LAST_SEQUENCE = 10071
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058
GROUP_FROM_RECORDS = 16  # appends waiting together go out as one batch from this many records
_META_NAME = "parallax.name"
_META_CREATED = "parallax.created_at"
_META_BASE = "parallax.base"  # state of a stream created empty by a fork: next seq, ts, token, trim


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
        self._conn = NatsConnection(self.servers, timeout, connect_timeout, user_credentials)
        self._queues: dict[str, list[tuple[AppendInput, asyncio.Future[AppendAck]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self.publishes = 0  # messages or atomic batches published (group commit makes it < appends)
        self._tips: dict[str, StreamState] = {}  # what this client last saw of each stream
        self._blobs = NatsBlobs(self)

    async def connection(self) -> tuple[NatsClient, JetStreamContext]:
        """The connected client (connecting on first use; reconnects are automatic)."""
        return await self._conn.connection()

    async def close(self) -> None:
        await self._conn.close()

    def kv(self, bucket: str) -> KeyValue:
        """A JetStream key-value bucket (`<PREFIX>_<bucket>`), created on first use."""
        buckets: dict[str, KeyValue] = self.__dict__.setdefault("_kv_buckets", {})
        if bucket not in buckets:
            buckets[bucket] = NatsKeyValue(self, f"{self.prefix}_{bucket}")
        return buckets[bucket]

    async def put_blob(self, data: bytes) -> str:
        """Blobs go to the JetStream object store `<PREFIX>_blobs`, named by their sha256."""
        return await self._blobs.put(data)

    async def get_blob(self, ref: str) -> bytes:
        return await self._blobs.get(ref)

    async def delete_blob(self, ref: str) -> None:
        await self._blobs.delete(ref)

    def js_name(self, stream: str) -> str:
        return f"{self.prefix}_{stream_hash(stream)}"

    def subject(self, stream: str) -> str:
        return f"{self.subject_prefix}.s.{stream_hash(stream)}"

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
        return await self._conn.request(subject, payload, headers)

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._conn.api(subject, body)

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
        # Appends to one stream from this client go out in order, and the ones waiting together
        # go out together: one atomic batch for the group (each checked on its own, in order),
        # as SQLite's group commit does. Separate appends would only race for the same position.
        future: asyncio.Future[AppendAck] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(stream, []).append((input, future))
        flusher = self._flushers.get(stream)
        if flusher is None or flusher.done():
            self._flushers[stream] = asyncio.create_task(self._flush(stream), name=f"nats-append:{stream}")
        return await future

    async def _flush(self, stream: str) -> None:
        queue = self._queues[stream]
        while queue:
            group: list[tuple[AppendInput, asyncio.Future[AppendAck]]] = []
            records = size = 0
            for input, future in queue:
                metered = sum(r.metered_bytes for r in input.records)
                if group and (records + len(input.records) > MAX_BATCH_RECORDS or size + metered > MAX_BATCH_BYTES):
                    break
                group.append((input, future))
                records += len(input.records)
                size += metered
            del queue[: len(group)]
            live = [(input, future) for input, future in group if not future.done()]
            # An atomic batch of several messages costs the server ~5 ms to commit (measured,
            # nats-server 2.15) against ~0.4 ms for one message: group only when enough appends
            # wait to pay for it, else send them one after another.
            if sum(len(input.records) for input, _ in live) >= GROUP_FROM_RECORDS:
                groups = [live]
            else:
                groups = [[one] for one in live]
            for part in groups:
                await self._settle(stream, part)

    async def _settle(self, stream: str, part: list[tuple[AppendInput, asyncio.Future[AppendAck]]]) -> None:
        try:
            results = await self._append_group(stream, [input for input, _ in part])
        except Exception as e:
            for _, future in part:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(part, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _append_group(self, stream: str, inputs: list[AppendInput]) -> list[AppendAck | StreamError]:
        append_id = secrets.token_bytes(16)
        maybe_landed = False
        fresh = False
        while True:
            cached = self._tips.get(stream)
            if cached is None or fresh:
                try:
                    state = await self._fetch_state(stream)
                except StreamNotFound as missing:
                    if not self.create_on_append:
                        return [missing] * len(inputs)
                    outcomes, records, _ = decide_group(stream, StreamState(), inputs)
                    if not records:  # every append refused: a refused append creates nothing
                        return [o for o in outcomes if isinstance(o, StreamError)]
                    with contextlib.suppress(StreamExists):
                        await self._add_stream(stream)
                    fresh = True
                    continue
            else:
                state = cached
            outcomes, records, after = decide_group(stream, state, inputs)
            if not fresh and any(isinstance(o, StreamError) for o in outcomes):
                fresh = True  # a cached state may be stale: refuse only on the server's
                continue
            if not records:
                return [o for o in outcomes if isinstance(o, StreamError)]
            payloads = frames_for(records, state, append_id)
            try:
                error = await self._publish(stream, payloads, state.next_seq)
            except NatsStoreError:
                raise
            except (NatsTimeout, ConnectionClosedError, OSError, NoRespondersError):
                maybe_landed = True  # the server may have stored it before the connection dropped
                fresh = True
                await asyncio.sleep(0.1)
                continue
            if error is None or (
                error.get("err_code") == _WRONG_LAST_SEQUENCE
                and maybe_landed
                and await self._landed(stream, state.next_seq, append_id, len(payloads))
            ):
                self._tips[stream] = after
                if after.trim_point > state.trim_point:
                    await self._purge(stream, after)
                tail = StreamPosition(after.next_seq, after.last_timestamp)
                acks: list[AppendAck | StreamError] = []
                for outcome in outcomes:
                    if isinstance(outcome, StreamError):
                        acks.append(outcome)
                        continue
                    first, last = records[outcome[0]], records[outcome[0] + outcome[1] - 1]
                    start = StreamPosition(first.seq_num, first.timestamp)
                    acks.append(AppendAck(start, StreamPosition(last.seq_num + 1, last.timestamp), tail))
                return acks
            code = error.get("err_code")
            if code == _WRONG_LAST_SEQUENCE:
                fresh = True
                continue
            if code == _STREAM_NOT_FOUND or error.get("code") == 404:
                self._tips.pop(stream, None)
                if not self.create_on_append:
                    return [StreamNotFound(stream)] * len(inputs)
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
        self.publishes += 1
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

    async def _landed(self, stream: str, start: int, append_id: bytes, count: int) -> bool:
        """After a lost acknowledgement: whether the `count` records at `start` are ours."""
        records = await self._direct_batch(stream, start, count, None)
        return len(records) == count and all(frame.append_id == append_id for _, frame in records)

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
    ) -> builtins.list[tuple[int, Frame]]:
        """Up to `count` records from seq `start`, in one direct batch get."""
        frames, _ = await self._direct_batch_pending(stream, start, count, max_bytes)
        return frames

    async def _direct_batch_pending(
        self, stream: str, start: int, count: int, max_bytes: int | None
    ) -> tuple[builtins.list[tuple[int, Frame]], int | None]:
        """`_direct_batch`, and how many messages the server still had after the last one
        returned (None when it did not say)."""
        nc, _ = await self.connection()
        request: dict[str, Any] = {"seq": start + 1, "batch": count}
        if max_bytes is not None:
            request["max_bytes"] = max_bytes
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: builtins.list[tuple[int, Frame]] = []
        pending: int | None = None
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.{self.js_name(stream)}", json.dumps(request).encode(), reply=inbox)
            while True:
                try:
                    msg = await keep_cancellation(sub.next_msg(timeout=self.timeout))
                except NatsTimeout as e:
                    raise NatsUnavailable(f"NATS at {self.url} did not answer a read of {stream!r} in time") from e
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
        async with self._conn.watching(self.subject(stream)) as watch:
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
        return await fork_stream(self, src, dst, at_seq)


def _error_of(data: bytes) -> dict[str, Any] | None:
    if not data:
        return None
    response = json.loads(data)
    error = response.get("error")
    return error if isinstance(error, dict) else None


def open_nats(url: str) -> NatsStore:
    """nats://host:port[,host:port...][?replicas=3&storage=file|memory&prefix=PX&create_on_append=true]"""
    options = parse_nats_url(url)
    return NatsStore(
        options.servers,
        prefix=options.prefix,
        replicas=options.replicas,
        storage=options.storage,
        create_on_append=options.create_on_append,
        user_credentials=options.credentials,
    )


__all__ = ["NatsStore", "NatsStoreError", "decode_frame", "encode_frame", "open_nats"]
