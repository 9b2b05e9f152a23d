"""Key-value buckets: the same contract on the stream-backed default (memory, SQLite) and on
JetStream KV (a real nats-server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parallax.streams import StreamStore
from parallax.streams.kv import KeyExists, RevisionMismatch
from parallax.streams.memory import MemoryStore
from parallax.streams.nats import NatsStore
from parallax.streams.nats_codec import decode_key, encode_key
from parallax.streams.sqlite import SqliteStore
from tests.nats_fixtures import every_store, nats_server

__all__ = ["every_store", "nats_server"]


async def test_create_update_compare_and_swap(store: StreamStore) -> None:
    kv = store.kv("leases")
    assert await kv.get("run/a b") is None
    first = await kv.create("run/a b", b"one")
    with pytest.raises(KeyExists):
        await kv.create("run/a b", b"again")
    second = await kv.update("run/a b", b"two", first)
    assert second > first
    with pytest.raises(RevisionMismatch):
        await kv.update("run/a b", b"stale", first)
    entry = await kv.get("run/a b")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"two", second)


async def test_racing_updates_exactly_one_wins(store: StreamStore) -> None:
    kv = store.kv("race")
    revision = await kv.create("k", b"0")
    outcomes = await asyncio.gather(
        *(kv.update("k", str(i).encode(), revision) for i in range(8)), return_exceptions=True
    )
    assert sum(isinstance(o, int) for o in outcomes) == 1
    assert all(isinstance(o, int | RevisionMismatch) for o in outcomes)


async def test_two_handles_see_each_others_writes(store: StreamStore, tmp_path: Path) -> None:
    if isinstance(store, MemoryStore):
        other = store
    elif isinstance(store, SqliteStore):
        other = SqliteStore(store.path)
    else:
        assert isinstance(store, NatsStore)
        other = NatsStore(store.servers, prefix=store.prefix)
    try:
        await store.kv("b").put("x", b"1")
        entry = await other.kv("b").get("x")
        assert entry is not None
        with pytest.raises(RevisionMismatch):
            await other.kv("b").update("x", b"2", entry.revision + 5)
        await other.kv("b").update("x", b"2", entry.revision)
        again = await store.kv("b").get("x")
        assert again is not None
        assert again.value == b"2"
    finally:
        if other is not store:
            await other.close()


async def test_delete_and_entries_by_prefix(store: StreamStore) -> None:
    kv = store.kv("reg")
    for key in ("agents/b", "agents/a", "other/c", "agents/ü=.x"):
        await kv.put(key, key.encode())
    await kv.delete("agents/b")
    assert [e.key for e in await kv.entries("agents/")] == ["agents/a", "agents/ü=.x"]
    assert await kv.get("agents/b") is None
    await kv.create("agents/b", b"back")  # a deleted key can be created again


def test_key_encoding_round_trips() -> None:
    for key in ("", "a", "runs/x.y", "=", "ü ß", "a..b", ".lead"):
        encoded = encode_key(key)
        assert all(c.isalnum() or c in "-/_=" for c in encoded)
        assert decode_key(encoded) == key
