"""Property tests: random interleavings of appenders never lose, duplicate or reorder an
acknowledged record; and the SQLite store behaves exactly like the in-memory one."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallax.core.errors import ParallaxError, SeqNumMismatch
from parallax.streams import AppendInput, AppendRecord, ReadLimit, SeqNum, StreamStore, TailOffset
from parallax.streams.memory import MemoryStore
from parallax.streams.sqlite import SqliteStore

appender_ops = st.lists(
    st.tuples(st.integers(1, 4), st.booleans(), st.integers(0, 3)),  # (records, conditional, yields)
    min_size=1,
    max_size=6,
)
interleavings = st.lists(appender_ops, min_size=2, max_size=5)


async def run_appenders(store: StreamStore, plan: list[list[tuple[int, bool, int]]]) -> None:
    acked: dict[int, bytes] = {}
    per_appender: dict[int, list[int]] = {}

    async def appender(who: int, ops: list[tuple[int, bool, int]]) -> None:
        for op_index, (count, conditional, yields) in enumerate(ops):
            for _ in range(yields):
                await asyncio.sleep(0)
            bodies = [f"{who}/{op_index}/{k}".encode() for k in range(count)]
            records = [AppendRecord(b) for b in bodies]
            while True:
                match = (await store.check_tail("s")).seq_num if conditional else None
                try:
                    ack = await store.append("s", AppendInput(records, match_seq_num=match))
                    break
                except SeqNumMismatch:
                    continue  # lost the race: re-read and decide again
            assert ack.end.seq_num - ack.start.seq_num == count
            for k, body in enumerate(bodies):
                assert ack.start.seq_num + k not in acked, "two acks for one seq_num"
                acked[ack.start.seq_num + k] = body
            per_appender.setdefault(who, []).append(ack.start.seq_num)

    await store.create("s")
    await asyncio.gather(*(appender(i, ops) for i, ops in enumerate(plan)))
    records = await store.read_all("s")
    assert [r.seq_num for r in records] == list(range(len(records))), "contiguous"
    assert {r.seq_num: r.body for r in records} == acked, "nothing lost, nothing extra"
    for starts in per_appender.values():
        assert starts == sorted(starts), "one appender's acks are in its order"


@settings(max_examples=40, deadline=None)
@given(interleavings)
def test_memory_interleavings(plan: list[list[tuple[int, bool, int]]]) -> None:
    asyncio.run(run_appenders(MemoryStore(), plan))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings)
def test_sqlite_interleavings(plan: list[list[tuple[int, bool, int]]]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with SqliteStore(Path(tmp) / "p.db") as store:
                await run_appenders(store, plan)

    asyncio.run(main())


# Differential: every operation gives the same outcome on both backends.

stream_names = st.sampled_from(["a", "b", "c"])
operations = st.one_of(
    st.tuples(
        st.just("append"),
        stream_names,
        st.integers(1, 3),
        st.none() | st.integers(0, 8),
        st.none() | st.sampled_from(["", "t1", "t2"]),
    ),
    st.tuples(
        st.just("fence"), stream_names, st.sampled_from(["", "t1", "t2"]), st.none() | st.sampled_from(["", "t1", "t2"])
    ),
    st.tuples(st.just("trim"), stream_names, st.integers(0, 12)),
    st.tuples(st.just("fork"), stream_names, stream_names, st.integers(0, 10)),
    st.tuples(st.just("read"), stream_names, st.integers(0, 12), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("tail_offset"), stream_names, st.integers(0, 12)),
    st.tuples(st.just("delete"), stream_names),
)


async def apply(store: StreamStore, op: tuple[Any, ...], counter: Callable[[], int]) -> object:
    kind = op[0]
    try:
        if kind == "append":
            _, name, n, match, token = op
            records = [AppendRecord(f"r{counter()}".encode()) for _ in range(n)]
            ack = await store.append(name, AppendInput(records, match, token))
            return ("ack", ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num)
        if kind == "fence":
            _, name, new, current = op
            return ("ack", (await store.fence(name, new, fencing_token=current)).start.seq_num)
        if kind == "trim":
            _, name, seq = op
            return ("ack", (await store.trim(name, seq)).start.seq_num)
        if kind == "fork":
            _, src, dst, at = op
            await store.fork(src, dst, at)
            return ("forked",)
        if kind == "read":
            _, name, start, count, clamp = op
            batch = await store.read(name, SeqNum(start), ReadLimit(count=count), clamp=clamp)
            return ("batch", [(r.seq_num, r.headers, r.body) for r in batch.records], batch.tail.seq_num)
        if kind == "tail_offset":
            _, name, offset = op
            batch = await store.read(name, TailOffset(offset))
            return ("batch", [(r.seq_num, r.body) for r in batch.records], batch.tail.seq_num)
        if kind == "delete":
            await store.delete(op[1])
            return ("deleted",)
    except ParallaxError as e:
        return ("error", type(e).__name__, getattr(e, "expected", None), getattr(e, "tail", None))
    raise AssertionError(op)


async def assert_same_as_memory(candidate: StreamStore, ops: list[tuple[Any, ...]]) -> None:
    """Apply `ops` to `candidate` and to the in-memory reference: every outcome, the list of
    streams and every stream's records must be the same."""
    memory = MemoryStore()
    counters = [0, 0]

    def make(i: int) -> Callable[[], int]:
        def next_id() -> int:
            counters[i] += 1
            return counters[i]

        return next_id

    for op in ops:
        expected = await apply(memory, op, make(0))
        got = await apply(candidate, op, make(1))
        assert got == expected, f"{op}: {type(candidate).__name__} {got} != memory {expected}"
    want = [i.name for i in await memory.list()]
    assert [i.name for i in await candidate.list()] == want
    for name in want:
        mem = [(r.seq_num, r.body) for r in await memory.read_all(name)]
        assert [(r.seq_num, r.body) for r in await candidate.read_all(name)] == mem


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25))
def test_sqlite_matches_memory(ops: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with SqliteStore(Path(tmp) / "d.db") as sqlite:
                await assert_same_as_memory(sqlite, ops)

    asyncio.run(main())
