from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parallax.core.errors import StreamNotFound
from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore, decode_headers, encode_headers
from tests.streams.contract import StreamStoreContract, recs


class TestSqliteStore(StreamStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        async with SqliteStore(tmp_path / "streams.db") as store:
            yield store


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with SqliteStore(path) as store:
        await store.append("s", AppendInput(recs("a", "b")))
        await store.fence("s", "tok")
        await store.trim("s", 1)
    async with SqliteStore(path) as store:
        assert [r.body for r in await store.read_all("s")] == [b"b", b"tok", b"\x00" * 7 + b"\x01"]
        await store.append("s", AppendInput(recs("c"), match_seq_num=4, fencing_token="tok"))


async def test_concurrent_appends_are_group_committed(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "g.db") as store:
        await asyncio.gather(*(store.append(f"s{i % 4}", AppendInput(recs(str(i)))) for i in range(400)))
        assert store.commits < 400 / 4, f"{store.commits} transactions for 400 concurrent appends"
        for i in range(4):
            assert len(await store.read_all(f"s{i}")) == 100


async def test_a_refused_append_in_a_group_does_not_fail_the_others(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "g.db") as store:
        results = await asyncio.gather(
            store.append("s", AppendInput(recs("a"))),
            store.append("s", AppendInput(recs("bad"), match_seq_num=7)),
            store.append("s", AppendInput(recs("b"))),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == ["AppendAck", "SeqNumMismatch", "AppendAck"]
        assert [r.body for r in await store.read_all("s")] == [b"a", b"b"]


async def test_create_on_append_off(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "c.db", create_on_append=False) as store:
        with pytest.raises(StreamNotFound):
            await store.append("s", AppendInput(recs("a")))
        await store.create("s")
        await store.append("s", AppendInput(recs("a")))


async def test_two_store_handles_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SqliteStore(path) as one, SqliteStore(path) as two:
        await one.create("s")
        waiter = asyncio.create_task(two.wait_for_tail("s", 0))
        await asyncio.sleep(0.01)
        await one.append("s", AppendInput(recs("a")))
        assert await asyncio.wait_for(waiter, 30) == 1
        await two.append("s", AppendInput(recs("b"), match_seq_num=1))
        assert [r.body for r in await one.read_all("s")] == [b"a", b"b"]


def test_header_encoding_round_trips() -> None:
    cases = [(), ((b"", b"fence"),), ((b"a" * 70000, b""), (b"k", b"\x00" * 3))]
    for headers in cases:
        assert decode_headers(encode_headers(headers)) == headers


async def test_timestamp_search_skips_trimmed_records(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.db") as store:
        await store.append("s", AppendInput([AppendRecord(b"x", timestamp=1000 + i) for i in range(20)]))
        await store.trim("s", 10)
        from parallax.streams import Timestamp

        assert (await store.read("s", Timestamp(0))).records[0].seq_num == 10
        assert (await store.read("s", Timestamp(1015))).records[0].seq_num == 15
