"""The S2 backend. No S2 endpoint is reachable from these machines: the contract suite runs
against one when PARALLAX_TEST_S2_ENDPOINT (and PARALLAX_TEST_S2_BASIN, S2_ACCESS_TOKEN) are
set, and is skipped otherwise. The mapping between Parallax's types and the SDK's is tested
here against the SDK's own types either way."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import s2_sdk as s2

from parallax.core.errors import (
    FencingTokenMismatch,
    ReadUnwritten,
    SeqNumMismatch,
    StoreURLError,
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
    open_store,
)
from parallax.streams.base import AppendAck, ReadBatch, ReadStart, StreamInfo
from parallax.streams.s2 import (
    S2Store,
    S2StoreError,
    from_sdk_ack,
    from_sdk_record,
    map_error,
    to_sdk_input,
    to_sdk_limit,
    to_sdk_start,
)
from parallax.streams.semantics import validate_stream_name
from tests.streams.contract import StreamStoreContract

# Read at import: the suite's autouse fixture clears PARALLAX_* variables for each test.
ENDPOINT = os.environ.get("PARALLAX_TEST_S2_ENDPOINT")
BASIN = os.environ.get("PARALLAX_TEST_S2_BASIN", "parallax-test")


@pytest.mark.skipif(ENDPOINT is None, reason="no S2 endpoint: set PARALLAX_TEST_S2_ENDPOINT to run the contract")
class TestS2Store(StreamStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[StreamStore]:
        # Each test's streams live under a random prefix of the test basin.
        async with S2Store(BASIN, endpoint=ENDPOINT) as store:
            yield Prefixed(store, f"t{secrets.token_hex(4)}/")

    @pytest.mark.skip(reason="the isolating prefix takes 10 of the name's 512 bytes")
    async def test_512_byte_name_is_accepted(self, store: StreamStore) -> None: ...


class Prefixed(StreamStore):
    """Another store with every stream name under `prefix`: isolation inside one namespace."""

    def __init__(self, inner: StreamStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        validate_stream_name(stream)  # "" would otherwise become the valid name `prefix`
        return await self.inner.append(self.prefix + stream, input)

    async def read(
        self, stream: str, start: ReadStart = SeqNum(0), limit: ReadLimit = ReadLimit(), *, clamp: bool = False
    ) -> ReadBatch:
        return await self.inner.read(self.prefix + stream, start, limit, clamp=clamp)

    async def wait_for_tail(self, stream: str, beyond: int) -> int:
        return await self.inner.wait_for_tail(self.prefix + stream, beyond)

    async def list(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> list[StreamInfo]:
        after = self.prefix + start_after if start_after else ""
        found = await self.inner.list(self.prefix + prefix, after, limit)
        return [StreamInfo(info.name[len(self.prefix) :], info.created_at) for info in found]

    async def create(self, stream: str) -> StreamInfo:
        validate_stream_name(stream)
        info = await self.inner.create(self.prefix + stream)
        return StreamInfo(stream, info.created_at)

    async def delete(self, stream: str) -> None:
        await self.inner.delete(self.prefix + stream)

    async def fork(self, src: str, dst: str, at_seq: int) -> StreamInfo:
        info = await self.inner.fork(self.prefix + src, self.prefix + dst, at_seq)
        return StreamInfo(dst, info.created_at)


def test_records_and_inputs_map_to_the_sdk_types() -> None:
    records = [
        AppendRecord(body=b"\x00body", headers=((b"type", b"x"), (b"type", b"dup"))),
        AppendRecord.fence("tok"),
        AppendRecord.trim(7),
        AppendRecord(body=b"t", timestamp=123),
    ]
    sdk = to_sdk_input(AppendInput(records, match_seq_num=4, fencing_token="tok"))
    assert isinstance(sdk, s2.AppendInput)
    assert (sdk.match_seq_num, sdk.fencing_token) == (4, "tok")
    assert sdk.records[0].headers == [(b"type", b"x"), (b"type", b"dup")]
    # Our command records are byte-for-byte the SDK's own.
    assert (sdk.records[1].body, sdk.records[1].headers) == (
        s2.CommandRecord.fence("tok").body,
        s2.CommandRecord.fence("tok").headers,
    )
    assert (sdk.records[2].body, sdk.records[2].headers) == (
        s2.CommandRecord.trim(7).body,
        s2.CommandRecord.trim(7).headers,
    )
    assert sdk.records[3].timestamp == 123
    # S2's metering is ours.
    assert s2.metered_bytes(sdk.records) == sum(r.metered_bytes for r in records)


def test_sequenced_records_acks_and_starts_map_back() -> None:
    record = from_sdk_record(s2.SequencedRecord(seq_num=9, body=b"b", headers=[(b"", b"fence")], timestamp=55))
    assert (record.seq_num, record.timestamp, record.body, record.command) == (9, 55, b"b", b"fence")
    ack = from_sdk_ack(
        s2.AppendAck(start=s2.StreamPosition(3, 10), end=s2.StreamPosition(5, 11), tail=s2.StreamPosition(6, 12))
    )
    assert (ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num, ack.tail.timestamp) == (3, 5, 6, 12)
    assert to_sdk_start(SeqNum(4)) == s2.SeqNum(4)
    assert to_sdk_start(Timestamp(99)) == s2.Timestamp(99)
    assert to_sdk_start(TailOffset(2)) == s2.TailOffset(2)
    assert to_sdk_limit(ReadLimit()) == s2.ReadLimit(count=1000, bytes=1024 * 1024)
    assert to_sdk_limit(ReadLimit(count=5000, bytes=10)) == s2.ReadLimit(count=1000, bytes=10)


def test_sdk_errors_map_to_parallax_errors() -> None:
    seq = map_error(s2.SeqNumMismatchError("seq_num_mismatch", "m", 412, expected_seq_num=5), "s")
    assert isinstance(seq, SeqNumMismatch) and seq.expected == 5
    fence = map_error(s2.FencingTokenMismatchError("fencing_token_mismatch", "m", 412, expected_fencing_token="t"), "s")
    assert isinstance(fence, FencingTokenMismatch) and fence.expected == "t"
    unwritten = map_error(s2.ReadUnwrittenError("read_unwritten", "m", 416, tail=s2.StreamPosition(3, 0)), "s")
    assert isinstance(unwritten, ReadUnwritten) and unwritten.tail == 3
    assert isinstance(map_error(s2.S2ServerError("stream_not_found", "no", 404), "s"), StreamNotFound)
    assert isinstance(map_error(s2.S2ServerError("resource_already_exists", "dup", 409), "s"), StreamExists)
    other = map_error(s2.S2ServerError("rate_limited", "slow down", 429), "runs/x")
    assert isinstance(other, S2StoreError) and "runs/x" in str(other) and "rate_limited" in str(other)


def test_s2_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2_ACCESS_TOKEN", "token")
    store = open_store("s2://my-basin?endpoint=http://127.0.0.1:9")
    assert isinstance(store, S2Store)
    assert store.basin_name == "my-basin"
    with pytest.raises(StoreURLError, match="names no basin"):
        open_store("s2://")
    with pytest.raises(StoreURLError, match="unknown option"):
        open_store("s2://b?colour=red")
    monkeypatch.delenv("S2_ACCESS_TOKEN")
    with pytest.raises(StoreURLError, match="S2_ACCESS_TOKEN"):
        open_store("s2://b")


def test_stream_info_times_are_milliseconds() -> None:
    from parallax.streams.s2 import _ms

    assert _ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1767225600000


class TestPrefixedAdapter(StreamStoreContract):
    """The adapter the S2 contract run relies on, checked where it can be: over memory."""

    @pytest.fixture
    async def store(self) -> StreamStore:
        from parallax.streams.memory import MemoryStore

        inner = MemoryStore()
        await inner.create("other/s")  # another tenant's stream, never seen through the prefix
        return Prefixed(inner, "tenant/")

    @pytest.mark.skip(reason="the isolating prefix takes 7 of the name's 512 bytes")
    async def test_512_byte_name_is_accepted(self, store: StreamStore) -> None: ...
