from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallax.core.errors import SeqNumMismatch, StoreURLError
from parallax.streams import AppendInput, AppendRecord, open_store
from parallax.streams.nats import NatsStore, decode_frame, encode_frame
from parallax.streams.nats_server import NatsServer
from tests.nats_fixtures import nats_server
from tests.streams.contract import StreamStoreContract, recs
from tests.streams.test_properties import assert_same_as_memory, interleavings, operations, run_appenders
from tests.waiting import async_wait_until

__all__ = ["nats_server"]


class TestNatsStore(StreamStoreContract):
    @pytest.fixture
    async def store(self, nats_server: NatsServer) -> AsyncIterator[NatsStore]:
        # A fresh namespace per test on the module's server: the prefix isolates streams.
        async with NatsStore(nats_server.url, prefix=f"T{secrets.token_hex(4)}") as store:
            yield store


def _prefix() -> str:
    return f"P{secrets.token_hex(5)}"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings)
def test_nats_interleavings(nats_server: NatsServer, plan: list[list[tuple[int, bool, int]]]) -> None:
    async def main() -> None:
        async with NatsStore(nats_server.url, prefix=_prefix()) as store:
            await run_appenders(store, plan)

    asyncio.run(main())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25))
def test_nats_matches_memory(nats_server: NatsServer, ops: list[tuple[Any, ...]]) -> None:
    """Every operation (appends with conditions, fences, trims, forks, reads, deletes) gives
    the same outcome on NATS as on the in-memory reference."""

    async def main() -> None:
        async with NatsStore(nats_server.url, prefix=_prefix()) as nats:
            await assert_same_as_memory(nats, ops)

    asyncio.run(main())


async def test_two_clients_race_conditional_appends(nats_server: NatsServer) -> None:
    """Two connections (as two processes would be) race for every position: each seq is won
    exactly once and the log holds exactly the winners."""
    prefix = _prefix()
    async with NatsStore(nats_server.url, prefix=prefix) as a, NatsStore(nats_server.url, prefix=prefix) as b:
        wins: dict[int, bytes] = {}

        async def racer(store: NatsStore, who: bytes) -> None:
            for _ in range(60):
                tail = (await store.check_tail("race")).seq_num if await store.list("race") else 0
                try:
                    ack = await store.append("race", AppendInput([AppendRecord(who)], match_seq_num=tail))
                except SeqNumMismatch:
                    continue
                assert ack.start.seq_num not in wins
                wins[ack.start.seq_num] = who

        await asyncio.gather(racer(a, b"a"), racer(b, b"b"))
        records = await a.read_all("race")
        assert {r.seq_num: r.body for r in records} == wins
        assert [r.seq_num for r in records] == list(range(len(records)))


async def test_a_batch_is_atomic_under_a_racing_writer(nats_server: NatsServer) -> None:
    """A 1000-record batch lands whole or not at all while another client appends singly."""
    prefix = _prefix()
    async with NatsStore(nats_server.url, prefix=prefix) as a, NatsStore(nats_server.url, prefix=prefix) as b:
        await a.create("s")

        async def singles() -> None:
            for i in range(200):
                await b.append("s", AppendInput([AppendRecord(f"single{i}".encode())]))

        async def batches() -> None:
            for i in range(5):
                records = [AppendRecord(f"batch{i}/{k}".encode()) for k in range(1000)]
                await a.append("s", AppendInput(records))

        await asyncio.gather(singles(), batches())
        bodies = [r.body.decode() for r in await a.read_all("s")]
        assert len(bodies) == 5200
        for i in range(5):
            start = bodies.index(f"batch{i}/0")
            assert bodies[start : start + 1000] == [f"batch{i}/{k}" for k in range(1000)], "batch interleaved"


async def test_acknowledged_records_survive_a_server_kill(tmp_path: Path) -> None:
    """SIGKILL the server between appends, and while a writer is appending: every acknowledged
    record is there after restart, once, in order; the writer carries on after reconnecting."""
    server = NatsServer(tmp_path / "n").start()
    try:
        async with NatsStore(server.url, prefix="K") as store:
            acked: list[bytes] = []
            await store.fence("s", "tok")

            async def writer() -> None:
                for i in range(300):
                    body = f"r{i}".encode()
                    await store.append("s", AppendInput([AppendRecord(body)], fencing_token="tok"))
                    acked.append(body)

            task = asyncio.create_task(writer())
            for _ in range(3):  # each kill while the writer is appending: once it has had more acks since the last
                more = len(acked) + 20
                await async_wait_until(lambda n=more: len(acked) >= n or task.done(), timeout=60, what="more acks")
                server.kill()
                await asyncio.sleep(0.2)  # the scenario: the server stays down for a while
                server.start()
            await asyncio.wait_for(task, 120)
            records = await store.read_all("s")
            assert [r.body for r in records[1:]] == acked
            assert [r.seq_num for r in records] == list(range(301))
    finally:
        server.kill()


def test_frames_round_trip() -> None:
    headers = ((b"", b"fence"), (b"\x00\xff", b"v" * 300))
    payload = encode_frame(123, 7, b"i" * 16, "before", "after", headers, b"body\x00")
    frame = decode_frame(payload)
    assert (frame.timestamp, frame.trim_after, frame.token_before, frame.token_after) == (123, 7, "before", "after")
    assert frame.headers == headers and frame.body == b"body\x00"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://", "names no NATS server"),
        ("nats://h:1?replicas=9", "replicas must be 1..5"),
        ("nats://h:1?storage=disk", "storage must be file or memory"),
        ("nats://h:1?colour=red", "unknown option(s) colour"),
        ("nats://h:1/path", "has no path"),
    ],
)
def test_bad_nats_urls(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_store(url)


async def test_unreachable_server_is_a_clear_error() -> None:
    from parallax.streams.nats import NatsStoreError
    from parallax.streams.nats_server import free_port

    store = NatsStore(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)
    with pytest.raises(NatsStoreError, match="cannot connect to NATS"):
        await store.append("s", AppendInput(recs("a")))


async def test_concurrent_appends_to_one_stream_are_group_committed(nats_server: NatsServer) -> None:
    """Appends waiting together go out as one atomic batch, each still checked on its own and
    in order: a conditional append that cannot hold is refused alone."""
    async with NatsStore(nats_server.url, prefix=_prefix()) as store:
        await store.create("g")
        before = store.publishes
        results = await asyncio.gather(
            *(store.append("g", AppendInput([AppendRecord(f"u{i}".encode())])) for i in range(400)),
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results)
        assert store.publishes - before < 400 / 4, f"{store.publishes - before} publishes for 400 appends"
        assert [r.body for r in await store.read_all("g")] == [f"u{i}".encode() for i in range(400)]  # in order
        mixed = await asyncio.gather(
            store.append("g", AppendInput(recs("a"), match_seq_num=400)),  # holds: the tail is 400
            store.append("g", AppendInput(recs("b"), match_seq_num=400)),  # cannot: "a" took 400
            store.append("g", AppendInput(recs("c"))),
            store.append("g", AppendInput(recs("d"), match_seq_num=402)),  # holds after "c"
            return_exceptions=True,
        )
        assert [type(m).__name__ for m in mixed] == ["AppendAck", "SeqNumMismatch", "AppendAck", "AppendAck"]
        assert isinstance(mixed[1], SeqNumMismatch) and mixed[1].expected == 401
        assert [r.body for r in await store.read_all("g", 400)] == [b"a", b"c", b"d"]
