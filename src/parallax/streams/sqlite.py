"""The embedded default: every stream in one SQLite file, in WAL mode.

Guarantees, on top of `StreamStore`'s:

- An append is acknowledged only after the transaction holding it has committed with the
  configured `synchronous` level (FULL by default, so an acknowledged append survives power
  loss, as S2 promises).
- Every change runs inside `BEGIN IMMEDIATE`, which takes SQLite's single write lock, and the
  stream's tail, token and trim point are read inside that transaction. Conditional appends
  are therefore linearizable across every process that opens the file.
- Concurrent appends from one process are group-committed: one writer thread drains every
  append that is waiting, applies them in arrival order in one transaction, and acknowledges
  each only after the commit. An append that fails its condition fails alone; an I/O error
  fails the whole group, and none of it is acknowledged.
- `tail` sees appends from this process at once, and appends from other processes through a
  poller that watches `PRAGMA data_version` (every 2 ms while someone is tailing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from parallax.core.errors import ParallaxError, ReadUnwritten, StreamExists, StreamNotFound
from parallax.project import ensure_folder
from parallax.streams.base import (
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
from parallax.streams.semantics import (
    apply_append,
    now_ms,
    resolve_limit,
    resolve_seq_start,
    take_within_bytes,
    validate_append,
    validate_stream_name,
)
from parallax.streams.sqlite_schema import decode_headers, encode_headers, migrate

_T = TypeVar("_T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
MAX_GROUP = 512  # appends per group commit; bounds the latency of the first one
POLL_INTERVAL_S = 0.002
CHECKPOINT_EVERY_COMMITS = 200  # or every CHECKPOINT_INTERVAL_S, whichever comes first
CHECKPOINT_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Loaded:
    """A stream's row as loaded inside the current write transaction."""

    id: int
    state: StreamState
    dirty: bool = False


@dataclass(slots=True)
class _Op:
    kind: Literal["append", "create", "delete", "fork"]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    touched: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])


_STOP = object()


class _Txn:
    """One write transaction: stream rows loaded once, records inserted as ops succeed."""

    def __init__(self, conn: sqlite3.Connection, create_on_append: bool) -> None:
        self.conn = conn
        self.create_on_append = create_on_append
        self.streams: dict[str, _Loaded | None] = {}

    def load(self, name: str) -> _Loaded | None:
        if name in self.streams:
            return self.streams[name]
        row = self.conn.execute(
            "SELECT id, next_seq, last_ts, fencing_token, trim_point FROM streams WHERE name = ?", (name,)
        ).fetchone()
        loaded = None if row is None else _Loaded(row[0], StreamState(row[1], row[2], row[3], row[4]))
        self.streams[name] = loaded
        return loaded

    def insert_stream(self, name: str, state: StreamState) -> _Loaded:
        cursor = self.conn.execute(
            "INSERT INTO streams (name, created_at, next_seq, last_ts, fencing_token, trim_point) VALUES (?,?,?,?,?,?)",
            (name, now_ms(), state.next_seq, state.last_timestamp, state.fencing_token, state.trim_point),
        )
        assert cursor.lastrowid is not None
        loaded = _Loaded(cursor.lastrowid, state)
        self.streams[name] = loaded
        return loaded

    def append(self, op: _Op) -> AppendAck:
        name, input = op.args
        loaded = self.load(name)
        if loaded is None:
            if not self.create_on_append:
                raise StreamNotFound(name)
            # Validate against an empty stream before creating it, so a refused append leaves nothing.
            applied = apply_append(name, StreamState(), input, now_ms())
            loaded = self.insert_stream(name, StreamState())
        else:
            applied = apply_append(name, loaded.state, input, now_ms())
        stream_id = loaded.id
        self.conn.executemany(
            "INSERT INTO records (stream_id, seq, ts, headers, body) VALUES (?,?,?,?,?)",
            [(stream_id, r.seq_num, r.timestamp, encode_headers(r.headers), r.body) for r in applied.records],
        )
        if applied.new_fences:
            self.conn.executemany(
                "INSERT INTO fences (stream_id, seq, token) VALUES (?,?,?)",
                [(stream_id, seq, token) for seq, token in applied.new_fences],
            )
        if applied.state.trim_point > loaded.state.trim_point:
            self.conn.execute(
                "DELETE FROM records WHERE stream_id = ? AND seq < ?", (stream_id, applied.state.trim_point)
            )
        loaded.state = applied.state
        loaded.dirty = True
        op.touched.append((name, applied.state.next_seq))
        first, last = applied.records[0], applied.records[-1]
        return AppendAck(
            StreamPosition(first.seq_num, first.timestamp),
            StreamPosition(last.seq_num + 1, last.timestamp),
            StreamPosition(applied.state.next_seq, applied.state.last_timestamp),
        )

    def create(self, op: _Op) -> StreamInfo:
        (name,) = op.args
        if self.load(name) is not None:
            raise StreamExists(name)
        self.insert_stream(name, StreamState())
        return StreamInfo(name, now_ms())

    def delete(self, op: _Op) -> None:
        (name,) = op.args
        loaded = self.load(name)
        if loaded is None:
            raise StreamNotFound(name)
        for table in ("records", "fences"):
            self.conn.execute(f"DELETE FROM {table} WHERE stream_id = ?", (loaded.id,))
        self.conn.execute("DELETE FROM streams WHERE id = ?", (loaded.id,))
        self.streams[name] = None
        op.touched.append((name, -1))

    def fork(self, op: _Op) -> StreamInfo:
        src, dst, at_seq = op.args
        source = self.load(src)
        if source is None:
            raise StreamNotFound(src)
        if self.load(dst) is not None:
            raise StreamExists(dst)
        state = source.state
        if at_seq < 0 or at_seq > state.next_seq:
            raise ReadUnwritten(state.next_seq, stream=src, start=at_seq)
        if at_seq == state.next_seq:
            token, last_ts = state.fencing_token, state.last_timestamp
        else:
            row = self.conn.execute(
                "SELECT token FROM fences WHERE stream_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
                (source.id, at_seq),
            ).fetchone()
            token = row[0] if row else ""
            row = self.conn.execute(
                "SELECT ts FROM records WHERE stream_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
                (source.id, at_seq),
            ).fetchone()
            last_ts = row[0] if row else 0
        forked = self.insert_stream(dst, StreamState(at_seq, last_ts, token, min(state.trim_point, at_seq)))
        for table, columns in (("records", "seq, ts, headers, body"), ("fences", "seq, token")):
            self.conn.execute(
                f"INSERT INTO {table} (stream_id, {columns}) SELECT ?, {columns} FROM {table} "
                "WHERE stream_id = ? AND seq < ?",
                (forked.id, source.id, at_seq),
            )
        op.touched.append((dst, at_seq))
        return StreamInfo(dst, now_ms())

    def flush_states(self) -> None:
        rows = [
            (s.state.next_seq, s.state.last_timestamp, s.state.fencing_token, s.state.trim_point, s.id)
            for s in self.streams.values()
            if s is not None and s.dirty
        ]
        self.conn.executemany(
            "UPDATE streams SET next_seq = ?, last_ts = ?, fencing_token = ?, trim_point = ? WHERE id = ?", rows
        )


class _TailWatch:
    """Wakes `wait_for_tail` callers of one event loop when a watched stream moves."""

    def __init__(self, store: SqliteStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.events: dict[str, asyncio.Event] = {}
        self.waiters: dict[str, int] = {}
        self.known_tails: dict[str, int] = {}
        self.poller: asyncio.Task[None] | None = None

    def event(self, stream: str) -> asyncio.Event:
        event = self.events.get(stream)
        if event is None:
            event = self.events[stream] = asyncio.Event()
        return event

    def moved(self, stream: str, tail: int) -> None:
        self.known_tails[stream] = tail
        event = self.events.pop(stream, None)
        if event is not None:
            event.set()

    def ensure_polling(self) -> None:
        if self.poller is None or self.poller.done():
            self.poller = self.loop.create_task(self._poll())

    async def _poll(self) -> None:
        conn = self.store.connect(readonly=True)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            # Look once right away: a commit made after a waiter read its tail but before this
            # poller took its baseline version would otherwise never be seen (a lost wake-up
            # that hung a follower until the stream's next commit; at a run's end there is none).
            scan = True
            while self.waiters:
                if not scan:
                    await asyncio.sleep(POLL_INTERVAL_S)
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now == version:
                        continue
                    version = now
                scan = False
                names = [name for name, n in self.waiters.items() if n > 0]
                found: dict[str, int] = {}
                for i in range(0, len(names), 500):
                    chunk = names[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT name, next_seq FROM streams WHERE name IN ({marks})"
                    found.update(conn.execute(sql, chunk).fetchall())
                for name in names:
                    tail = found.get(name, -1)
                    if tail != self.known_tails.get(name):
                        self.moved(name, tail)
        finally:
            conn.close()


class SqliteStore(StreamStore):
    """Streams in one SQLite file. Open with `SqliteStore(path)` or `open_store("sqlite:...")`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        create_on_append: bool = True,
        busy_timeout_ms: int = 60_000,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path.resolve()}"
        self.synchronous = synchronous
        self.create_on_append = create_on_append
        self.busy_timeout_ms = busy_timeout_ms
        ensure_folder(self.path.parent)  # a .parallax/ folder is made git-ignored
        setup = self.connect()
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            migrate(setup)
        finally:
            setup.close()
        self._closed = False
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"parallax-sqlite-writer:{self.path.name}")
        self._writer.daemon = True
        self._since_checkpoint = 0
        self._checkpoint_wanted = threading.Event()
        self._stopping = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name=f"parallax-sqlite-checkpointer:{self.path.name}", daemon=True
        )
        self._writer.start()
        self._checkpointer.start()
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="parallax-sqlite-reader")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._watches: dict[asyncio.AbstractEventLoop, _TailWatch] = {}
        self.commits = 0  # write transactions committed; appends / commits is the group size

    def connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        if readonly:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _checkpoint_loop(self) -> None:
        conn = self.connect()
        try:
            while not self._stopping.is_set():
                self._checkpoint_wanted.wait(CHECKPOINT_INTERVAL_S)
                self._checkpoint_wanted.clear()
                if self._stopping.is_set():
                    return
                with contextlib.suppress(sqlite3.OperationalError):  # busy: the next round catches up
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    # The writer thread.

    def _write_loop(self) -> None:
        conn = self.connect()
        # Checkpointing moves WAL pages into the database file. Done on the commit path (SQLite's
        # default) it stalls whichever append crosses the threshold; a separate thread does it
        # instead, without blocking appends (PASSIVE never waits for writers).
        conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                group: list[_Op] = [first]  # type: ignore[list-item]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    group.append(item)  # type: ignore[arg-type]
                self._commit_group(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Op]) -> None:
        results: list[tuple[_Op, object, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            txn = _Txn(conn, self.create_on_append)
            for op in group:
                try:
                    result: object = getattr(txn, op.kind)(op)
                except ParallaxError as e:
                    results.append((op, None, e))
                else:
                    results.append((op, result, None))
            txn.flush_states()
            conn.execute("COMMIT")
            self.commits += 1
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY_COMMITS:
                self._since_checkpoint = 0
                self._checkpoint_wanted.set()
        except BaseException as e:  # an I/O error or a bug: nothing of this group is acknowledged
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = e if isinstance(e, Exception) else RuntimeError(repr(e))
            results = [(op, None, failure) for op in group]
            for op in group:
                op.touched.clear()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, object, BaseException | None]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed; nobody is waiting
                loop.call_soon_threadsafe(self._deliver, items)

    def _deliver(self, items: list[tuple[_Op, object, BaseException | None]]) -> None:
        watch = self._watches.get(asyncio.get_running_loop())
        for op, result, error in items:
            if not op.future.done():
                if error is not None:
                    op.future.set_exception(error)
                else:
                    op.future.set_result(result)
            if watch is not None:
                for name, tail in op.touched:
                    watch.moved(name, tail)

    async def _submit(self, kind: Literal["append", "create", "delete", "fork"], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(f"store {self.url} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Op(kind, args, future, loop))
        return await future

    # Reads run on a small pool, each thread with its own connection.

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect(readonly=True)
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise RuntimeError(f"store {self.url} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    # StreamStore.

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        validate_stream_name(stream)
        validate_append(input)
        ack: AppendAck = await self._submit("append", stream, input)
        return ack

    async def create(self, stream: str) -> StreamInfo:
        validate_stream_name(stream)
        info: StreamInfo = await self._submit("create", stream)
        return info

    async def delete(self, stream: str) -> None:
        validate_stream_name(stream)
        await self._submit("delete", stream)

    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        validate_stream_name(src)
        validate_stream_name(dst)
        info: StreamInfo = await self._submit("fork", src, dst, at_seq)
        return info

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

        def run(conn: sqlite3.Connection) -> ReadBatch:
            conn.execute("BEGIN")
            try:
                return _read(conn, stream, start, count, max_bytes, clamp)
            finally:
                conn.execute("COMMIT")

        return await self._in_reader(run)

    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> list[StreamInfo]:
        def run(conn: sqlite3.Connection) -> list[StreamInfo]:
            # Name order is the byte order of UTF-8, which SQLite's BINARY collation gives; the
            # range on `name` uses the unique index, and U+10FFFF sorts after any continuation.
            low = max(start_after, prefix)
            rows = conn.execute(
                "SELECT name, created_at FROM streams WHERE name >= ? AND name > ? AND name < ? ORDER BY name LIMIT ?",
                (low, start_after, prefix + "\U0010ffff", limit),
            ).fetchall()
            return [StreamInfo(name, created) for name, created in rows]

        return await self._in_reader(run)

    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        loop = asyncio.get_running_loop()
        watch = self._watches.get(loop)
        if watch is None:
            watch = self._watches[loop] = _TailWatch(self, loop)
        watch.waiters[stream] = watch.waiters.get(stream, 0) + 1
        try:
            while True:
                event = watch.event(stream)  # registered before the check: no lost wake-up
                watch.ensure_polling()
                tail = await self._in_reader(lambda conn: _tail_of(conn, stream))
                if tail is None:
                    raise StreamNotFound(stream)
                watch.known_tails[stream] = tail
                if tail > beyond:
                    return tail
                await event.wait()
        finally:
            watch.waiters[stream] -= 1
            if watch.waiters[stream] == 0:
                del watch.waiters[stream]
                watch.known_tails.pop(stream, None)
            if not watch.waiters:
                del self._watches[loop]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._stopping.set()
        self._checkpoint_wanted.set()
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._queue.put(_STOP)
            self._stopping.set()
            self._checkpoint_wanted.set()


def _tail_of(conn: sqlite3.Connection, stream: str) -> int | None:
    row = conn.execute("SELECT next_seq FROM streams WHERE name = ?", (stream,)).fetchone()
    return None if row is None else int(row[0])


def _read(
    conn: sqlite3.Connection, stream: str, start: ReadStart, count: int, max_bytes: int, clamp: bool
) -> ReadBatch:
    row = conn.execute(
        "SELECT id, next_seq, last_ts, fencing_token, trim_point FROM streams WHERE name = ?", (stream,)
    ).fetchone()
    if row is None:
        raise StreamNotFound(stream)
    stream_id = row[0]
    state = StreamState(row[1], row[2], row[3], row[4])
    tail = StreamPosition(state.next_seq, state.last_timestamp)
    if isinstance(start, Timestamp):
        position = _first_at_or_after(conn, stream_id, state, start.timestamp)
    else:
        position = resolve_seq_start(stream, start, state, clamp=clamp)
    if count == 0 or position >= state.next_seq:
        return ReadBatch((), tail)
    rows = conn.execute(
        "SELECT seq, ts, headers, body FROM records WHERE stream_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
        (stream_id, position, count),
    ).fetchall()
    records = [Record(seq, ts, decode_headers(headers), body) for seq, ts, headers, body in rows]
    return ReadBatch(tuple(take_within_bytes(records, max_bytes)), tail)


def _first_at_or_after(conn: sqlite3.Connection, stream_id: int, state: StreamState, timestamp: int) -> int:
    """Binary search by primary key: timestamps never decrease with seq, so no index is needed."""
    lo, hi = state.trim_point, state.next_seq
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT ts FROM records WHERE stream_id = ? AND seq = ?", (stream_id, mid)).fetchone()
        if row is None or row[0] < timestamp:  # None: trimmed under us, so everything below is gone
            lo = mid + 1
        else:
            hi = mid
    return lo
