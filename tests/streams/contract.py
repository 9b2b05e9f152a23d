"""The stream store contract, written once and run against every backend.

A backend's test module subclasses `StreamStoreContract` and provides a `store` fixture (and
`make_store` for a second handle on the same namespace where the backend has one).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from parallax.core.errors import (
    FencingTokenMismatch,
    InvalidAppend,
    InvalidRead,
    InvalidStreamName,
    ReadUnwritten,
    SeqNumMismatch,
    StreamExists,
    StreamNotFound,
)
from parallax.streams import (
    AppendInput,
    AppendRecord,
    ReadLimit,
    SeqNum,
    StreamStore,
    TailOffset,
    Timestamp,
)
from parallax.streams.base import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, metered_size
from tests.waiting import async_wait_until


def recs(*bodies: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> list[AppendRecord]:
    return [AppendRecord(body=b.encode(), headers=headers) for b in bodies]


async def bodies(store: StreamStore, stream: str, start: int = 0) -> list[str]:
    return [r.body.decode() for r in await store.read_all(stream, start)]


class StreamStoreContract:
    # Appends, ordering, contiguity

    async def test_append_assigns_contiguous_seq_nums_from_zero(self, store: StreamStore) -> None:
        first = await store.append("s", AppendInput(recs("a", "b", "c")))
        second = await store.append("s", AppendInput(recs("d")))
        assert (first.start.seq_num, first.end.seq_num, first.tail.seq_num) == (0, 3, 3)
        assert (second.start.seq_num, second.end.seq_num, second.tail.seq_num) == (3, 4, 4)
        records = await store.read_all("s")
        assert [r.seq_num for r in records] == [0, 1, 2, 3]
        assert [r.body for r in records] == [b"a", b"b", b"c", b"d"]

    async def test_headers_and_binary_bodies_round_trip(self, store: StreamStore) -> None:
        headers = ((b"type", b"task.claimed"), (b"agent", b"\x00\xff"), (b"type", b"dup"))
        body = bytes(range(256))
        await store.append("s", AppendInput([AppendRecord(body=body, headers=headers), AppendRecord()]))
        got = await store.read_all("s")
        assert got[0].headers == headers
        assert got[0].body == body
        assert got[0].header(b"type") == b"task.claimed"
        assert got[1].headers == () and got[1].body == b""

    async def test_concurrent_appends_are_all_acknowledged_once_in_order(self, store: StreamStore) -> None:
        acks = await asyncio.gather(*(store.append("s", AppendInput(recs(f"{i}-a", f"{i}-b"))) for i in range(100)))
        starts = sorted(a.start.seq_num for a in acks)
        assert starts == list(range(0, 200, 2))
        records = await store.read_all("s")
        assert len(records) == 200
        for ack, i in zip(acks, range(100), strict=True):
            assert records[ack.start.seq_num].body == f"{i}-a".encode()
            assert records[ack.start.seq_num + 1].body == f"{i}-b".encode()

    async def test_check_tail(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("a", "b")))
        position = await store.check_tail("s")
        assert position.seq_num == 2
        assert position.timestamp > 0

    # Limits: every one refuses the whole batch and writes nothing

    async def test_empty_batch_is_refused(self, store: StreamStore) -> None:
        with pytest.raises(InvalidAppend, match="at least one record"):
            await store.append("s", AppendInput([]))
        assert await store.list() == []

    async def test_batch_of_exactly_1000_records_is_accepted_1001_refused(self, store: StreamStore) -> None:
        ack = await store.append("s", AppendInput(recs(*["x"] * MAX_BATCH_RECORDS)))
        assert ack.end.seq_num == 1000
        with pytest.raises(InvalidAppend, match="at most 1000 records"):
            await store.append("s", AppendInput(recs(*["x"] * (MAX_BATCH_RECORDS + 1))))
        assert (await store.check_tail("s")).seq_num == 1000

    async def test_batch_of_exactly_one_mib_metered_is_accepted(self, store: StreamStore) -> None:
        headers = ((b"k", b"v"),)
        body = b"x" * (MAX_BATCH_BYTES - metered_size(headers, b""))
        record = AppendRecord(body=body, headers=headers)
        assert record.metered_bytes == MAX_BATCH_BYTES
        await store.append("s", AppendInput([record]))
        assert (await store.read("s")).records[0].body == body

    async def test_batch_over_one_mib_is_refused_whole(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("before")))
        big = [AppendRecord(body=b"x" * (300 * 1024)) for _ in range(4)]
        with pytest.raises(InvalidAppend, match="metered bytes"):
            await store.append("s", AppendInput(big))
        one_byte_over = AppendRecord(body=b"x" * (MAX_BATCH_BYTES - 8 + 1))
        with pytest.raises(InvalidAppend, match="metered bytes"):
            await store.append("s", AppendInput([one_byte_over]))
        assert await bodies(store, "s") == ["before"]

    @pytest.mark.parametrize(
        ("headers", "body", "message"),
        [
            (((b"", b"fence"), (b"x", b"y")), b"", "only header"),
            (((b"", b"explode"),), b"", "unknown command"),
            (((b"", b"fence"),), b"x" * 37, "at most 36 bytes"),
            (((b"", b"trim"),), b"\x00\x01", "8-byte"),
            (((b"", b"fence"),), b"\xff\xfe", "UTF-8"),
        ],
    )
    async def test_bad_headers_refuse_the_whole_batch(
        self, store: StreamStore, headers: tuple[tuple[bytes, bytes], ...], body: bytes, message: str
    ) -> None:
        await store.append("s", AppendInput(recs("ok")))
        batch = [*recs("fine"), AppendRecord(body=body, headers=headers)]
        with pytest.raises(InvalidAppend, match=message):
            await store.append("s", AppendInput(batch))
        assert await bodies(store, "s") == ["ok"]

    @pytest.mark.parametrize("name", ["", "x" * 513])
    async def test_bad_stream_names_are_refused(self, store: StreamStore, name: str) -> None:
        with pytest.raises(InvalidStreamName):
            await store.append(name, AppendInput(recs("a")))

    async def test_512_byte_name_is_accepted(self, store: StreamStore) -> None:
        name = "é" * 256
        await store.append(name, AppendInput(recs("a")))
        assert [i.name for i in await store.list()] == [name]

    # Conditional appends

    async def test_match_seq_num(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("a"), match_seq_num=0))
        await store.append("s", AppendInput(recs("b"), match_seq_num=1))
        with pytest.raises(SeqNumMismatch) as info:
            await store.append("s", AppendInput(recs("c"), match_seq_num=1))
        assert info.value.expected == 2
        with pytest.raises(SeqNumMismatch) as info:
            await store.append("s", AppendInput(recs("c"), match_seq_num=5))
        assert info.value.expected == 2
        assert await bodies(store, "s") == ["a", "b"]

    async def test_match_seq_num_on_a_new_stream(self, store: StreamStore) -> None:
        with pytest.raises(SeqNumMismatch) as info:
            await store.append("new", AppendInput(recs("a"), match_seq_num=3))
        assert info.value.expected == 0
        assert await store.list() == []

    async def test_racing_conditional_appends_exactly_one_wins(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("base")))
        results = await asyncio.gather(
            *(store.append("s", AppendInput(recs(f"w{i}"), match_seq_num=1)) for i in range(20)),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, SeqNumMismatch)]
        assert len(winners) == 1 and len(losers) == 19
        assert all(loser.expected == 2 for loser in losers)
        assert (await store.check_tail("s")).seq_num == 2

    async def test_fencing(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("a")))
        ack = await store.fence("s", "writer-1")
        assert ack.start.seq_num == 1  # a command record is a record
        with pytest.raises(FencingTokenMismatch) as info:
            await store.append("s", AppendInput(recs("x"), fencing_token="writer-2"))
        assert info.value.expected == "writer-1"
        await store.append("s", AppendInput(recs("b"), fencing_token="writer-1"))
        await store.append("s", AppendInput(recs("c")))  # fencing is cooperative: no token, no check
        with pytest.raises(FencingTokenMismatch):
            await store.fence("s", "writer-2", fencing_token="wrong")
        await store.fence("s", "writer-2", fencing_token="writer-1")
        with pytest.raises(FencingTokenMismatch):
            await store.append("s", AppendInput(recs("x"), fencing_token="writer-1"))
        await store.fence("s", "", fencing_token="writer-2")  # empty clears
        await store.append("s", AppendInput(recs("d"), fencing_token=""))
        records = await store.read_all("s")
        assert [r.command for r in records] == [None, b"fence", None, None, b"fence", b"fence", None]
        assert [r.body for r in records if r.command is None] == [b"a", b"b", b"c", b"d"]

    async def test_token_on_an_unfenced_stream_must_be_empty(self, store: StreamStore) -> None:
        with pytest.raises(FencingTokenMismatch) as info:
            await store.append("s", AppendInput(recs("a"), fencing_token="me"))
        assert info.value.expected == ""

    async def test_fence_takes_effect_within_its_batch(self, store: StreamStore) -> None:
        await store.append("s", AppendInput([AppendRecord.fence("t1"), *recs("a")], fencing_token=""))
        with pytest.raises(FencingTokenMismatch):
            await store.append("s", AppendInput(recs("b"), fencing_token=""))
        await store.append("s", AppendInput(recs("b"), fencing_token="t1"))

    async def test_fencing_is_checked_before_seq_num(self, store: StreamStore) -> None:
        await store.fence("s", "t")
        with pytest.raises(FencingTokenMismatch):
            await store.append("s", AppendInput(recs("a"), match_seq_num=9, fencing_token="u"))

    # Trim

    async def test_trim_hides_records_below_the_trim_point(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("0", "1", "2", "3", "4")))
        ack = await store.trim("s", 3)
        assert ack.start.seq_num == 5
        records = await store.read_all("s")
        assert [r.seq_num for r in records] == [3, 4, 5]
        assert (await store.read("s", SeqNum(1))).records[0].seq_num == 3
        assert (await store.read("s", TailOffset(100))).records[0].seq_num == 3
        await store.trim("s", 1)  # never moves back
        assert (await store.read("s")).records[0].seq_num == 3
        await store.append("s", AppendInput(recs("6")))
        assert (await store.check_tail("s")).seq_num == 8

    async def test_trim_past_the_tail_stops_at_the_tail(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("0", "1")))
        await store.trim("s", 1_000)
        assert (await store.read("s")).records == ()
        await store.append("s", AppendInput(recs("x")))
        assert [r.seq_num for r in await store.read_all("s")] == [3]

    # Fork

    async def test_fork_copies_the_prefix_with_the_same_positions(self, store: StreamStore) -> None:
        await store.append("src", AppendInput(recs("a", "b", "c", "d")))
        await store.fork("src", "dst", 2)
        src, dst = await store.read_all("src"), await store.read_all("dst")
        assert [(r.seq_num, r.timestamp, r.body) for r in dst] == [(r.seq_num, r.timestamp, r.body) for r in src[:2]]
        ack = await store.append("dst", AppendInput(recs("x"), match_seq_num=2))
        assert ack.start.seq_num == 2
        assert await bodies(store, "src") == ["a", "b", "c", "d"]
        assert await bodies(store, "dst") == ["a", "b", "x"]

    async def test_fork_at_tail_and_at_zero(self, store: StreamStore) -> None:
        await store.append("src", AppendInput(recs("a", "b")))
        await store.fork("src", "whole", 2)
        await store.fork("src", "empty", 0)
        assert await bodies(store, "whole") == ["a", "b"]
        assert (await store.check_tail("empty")).seq_num == 0

    async def test_fork_errors(self, store: StreamStore) -> None:
        await store.append("src", AppendInput(recs("a")))
        await store.append("taken", AppendInput(recs("a")))
        with pytest.raises(ReadUnwritten) as info:
            await store.fork("src", "dst", 5)
        assert info.value.tail == 1
        with pytest.raises(StreamExists):
            await store.fork("src", "taken", 1)
        with pytest.raises(StreamNotFound):
            await store.fork("missing", "dst", 0)
        assert [i.name for i in await store.list()] == ["src", "taken"]

    async def test_fork_keeps_the_fencing_token_in_force_at_that_point(self, store: StreamStore) -> None:
        await store.append("src", AppendInput(recs("a")))
        await store.fence("src", "old")  # seq 1
        await store.append("src", AppendInput(recs("b")))
        await store.fence("src", "new", fencing_token="old")  # seq 3
        await store.fork("src", "before", 1)
        await store.fork("src", "middle", 3)
        await store.fork("src", "after", 4)
        await store.append("before", AppendInput(recs("x"), fencing_token=""))
        await store.append("middle", AppendInput(recs("x"), fencing_token="old"))
        await store.append("after", AppendInput(recs("x"), fencing_token="new"))

    async def test_fork_keeps_the_trim_point(self, store: StreamStore) -> None:
        await store.append("src", AppendInput(recs("0", "1", "2", "3")))
        await store.trim("src", 2)
        await store.fork("src", "dst", 4)
        assert [r.seq_num for r in await store.read_all("dst")] == [2, 3]

    # Timestamps and reads

    async def test_timestamps_never_decrease_and_are_capped_at_arrival(self, store: StreamStore) -> None:
        now = time.time_ns() // 1_000_000
        await store.append("s", AppendInput([AppendRecord(b"a", timestamp=now - 10_000)]))
        await store.append("s", AppendInput([AppendRecord(b"b", timestamp=now - 5_000)]))
        await store.append("s", AppendInput([AppendRecord(b"c", timestamp=now - 20_000)]))  # backwards: raised
        await store.append("s", AppendInput([AppendRecord(b"d", timestamp=now + 10**9)]))  # future: capped
        await store.append("s", AppendInput(recs("e")))
        stamps = [r.timestamp for r in await store.read_all("s")]
        assert stamps[:3] == [now - 10_000, now - 5_000, now - 5_000]
        assert stamps == sorted(stamps)
        assert stamps[3] <= time.time_ns() // 1_000_000

    async def test_read_from_timestamp(self, store: StreamStore) -> None:
        base = time.time_ns() // 1_000_000 - 100_000
        await store.append(
            "s", AppendInput([AppendRecord(str(i).encode(), timestamp=base + i * 10) for i in range(50)])
        )
        batch = await store.read("s", Timestamp(base + 205))
        assert batch.records[0].seq_num == 21
        assert (await store.read("s", Timestamp(base + 200))).records[0].seq_num == 20
        assert (await store.read("s", Timestamp(0))).records[0].seq_num == 0
        assert (await store.read("s", Timestamp(base + 10**6))).records == ()

    async def test_read_start_past_the_tail(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("a", "b")))
        assert (await store.read("s", SeqNum(2))).records == ()
        with pytest.raises(ReadUnwritten) as info:
            await store.read("s", SeqNum(3))
        assert info.value.tail == 2
        clamped = await store.read("s", SeqNum(3), clamp=True)
        assert clamped.records == () and clamped.tail.seq_num == 2

    async def test_read_tail_offset(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("a", "b", "c", "d")))
        assert [r.body for r in (await store.read("s", TailOffset(2))).records] == [b"c", b"d"]
        assert (await store.read("s", TailOffset(0))).records == ()
        assert len((await store.read("s", TailOffset(99))).records) == 4

    async def test_read_limits(self, store: StreamStore) -> None:
        await store.append("s", AppendInput([AppendRecord(b"x" * 92) for _ in range(10)]))  # 100 metered each
        assert len((await store.read("s", limit=ReadLimit(count=3))).records) == 3
        assert len((await store.read("s", limit=ReadLimit(bytes=350))).records) == 3
        assert len((await store.read("s", limit=ReadLimit(bytes=300))).records) == 3
        assert len((await store.read("s", limit=ReadLimit(bytes=1))).records) == 1  # always progress
        empty = await store.read("s", limit=ReadLimit(count=0))
        assert empty.records == () and empty.tail.seq_num == 10
        with pytest.raises(InvalidRead):
            await store.read("s", limit=ReadLimit(count=-1))

    async def test_reads_are_capped_at_1000_records(self, store: StreamStore) -> None:
        for _ in range(2):
            await store.append("s", AppendInput(recs(*["x"] * 1000)))
        assert len((await store.read("s", limit=ReadLimit(count=5000))).records) == 1000
        assert len(await store.read_all("s")) == 2000

    async def test_read_of_a_missing_stream(self, store: StreamStore) -> None:
        with pytest.raises(StreamNotFound):
            await store.read("missing")
        with pytest.raises(StreamNotFound):
            await store.check_tail("missing")

    # Namespace

    async def test_list_by_prefix_in_name_order(self, store: StreamStore) -> None:
        for name in ["runs/b/control", "runs/a/control", "runs/a/agents/x", "other", "runs"]:
            await store.create(name)
        assert [i.name for i in await store.list("runs/")] == ["runs/a/agents/x", "runs/a/control", "runs/b/control"]
        assert [i.name for i in await store.list("runs/", start_after="runs/a/control")] == ["runs/b/control"]
        assert [i.name for i in await store.list(limit=2)] == ["other", "runs"]
        assert [i.name for i in await store.list("zzz")] == []

    async def test_create_and_delete(self, store: StreamStore) -> None:
        info = await store.create("s")
        assert info.name == "s" and info.created_at > 0
        with pytest.raises(StreamExists):
            await store.create("s")
        assert (await store.check_tail("s")).seq_num == 0
        await store.append("s", AppendInput(recs("a")))
        await store.delete("s")
        with pytest.raises(StreamNotFound):
            await store.read("s")
        with pytest.raises(StreamNotFound):
            await store.delete("s")
        await store.append("s", AppendInput(recs("again")))  # a new stream, from seq 0
        assert [r.seq_num for r in await store.read_all("s")] == [0]

    # Tail

    async def test_tail_yields_history_then_new_records(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("0", "1")))
        seen: list[bytes] = []

        async def follow() -> None:
            async for record in store.tail("s", 1):
                seen.append(record.body)
                if len(seen) == 4:
                    return

        task = asyncio.create_task(follow())
        # each append once the tail has yielded everything before it: it is waiting for new records
        await async_wait_until(lambda: seen == [b"1"] or task.done(), timeout=30, interval=0.002, what="the history")
        await store.append("s", AppendInput(recs("2")))
        await async_wait_until(lambda: len(seen) == 2 or task.done(), timeout=30, interval=0.002, what="record 2")
        await store.append("s", AppendInput(recs("3", "4")))
        await asyncio.wait_for(task, 30)
        assert seen == [b"1", b"2", b"3", b"4"]

    async def test_tail_from_past_the_tail_waits_for_that_seq(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("0")))

        async def first() -> int:
            async for record in store.tail("s", 3):
                return record.seq_num
            raise AssertionError("tail ended")

        task = asyncio.create_task(first())
        await store.append("s", AppendInput(recs("1", "2")))
        await asyncio.sleep(0.02)
        assert not task.done()
        await store.append("s", AppendInput(recs("3")))
        assert await asyncio.wait_for(task, 30) == 3

    async def test_tail_of_a_missing_stream(self, store: StreamStore) -> None:
        with pytest.raises(StreamNotFound):
            async for _ in store.tail("missing"):
                pass

        async def first() -> bytes:
            async for record in store.tail("later", missing_ok=True):
                return record.body
            raise AssertionError("tail ended")

        task = asyncio.create_task(first())
        await asyncio.sleep(0.02)
        await store.append("later", AppendInput(recs("hello")))
        assert await asyncio.wait_for(task, 30) == b"hello"

    async def test_wait_for_tail(self, store: StreamStore) -> None:
        await store.append("s", AppendInput(recs("0")))
        assert await store.wait_for_tail("s", 0) == 1
        waiter = asyncio.create_task(store.wait_for_tail("s", 1))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await store.append("s", AppendInput(recs("1", "2")))
        assert await asyncio.wait_for(waiter, 30) == 3

    async def test_many_tails_on_one_stream(self, store: StreamStore) -> None:
        async def collect() -> list[int]:
            out: list[int] = []
            async for record in store.tail("s", missing_ok=True):
                out.append(record.seq_num)
                if len(out) == 30:
                    return out
            raise AssertionError("tail ended")

        tasks = [asyncio.create_task(collect()) for _ in range(10)]
        for i in range(30):
            await store.append("s", AppendInput(recs(str(i))))
            if i % 7 == 0:
                await asyncio.sleep(0.002)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert all(r == list(range(30)) for r in results)
