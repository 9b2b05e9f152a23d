"""A three-node NATS cluster on loopback, streams replicated three times: the store keeps
working, and loses nothing acknowledged, while one node is SIGKILLed and brought back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from parallax.streams import AppendInput, AppendRecord
from parallax.streams.nats import NatsStore, NatsStoreError
from parallax.streams.nats_server import cluster

pytestmark = pytest.mark.timeout(180)


async def test_replicated_streams_survive_a_node_kill(tmp_path: Path) -> None:
    nodes = cluster(tmp_path, 3)
    for node in nodes:
        node.start(wait=False)
    try:
        for node in nodes:
            node.wait_ready()
        urls = [node.url for node in nodes]
        async with NatsStore(urls, replicas=3) as store:
            deadline = time.monotonic() + 60
            while True:  # JetStream elects its meta leader a few seconds after the routes form
                try:
                    await store.append("s", AppendInput([AppendRecord(b"first")]))
                    break
                except NatsStoreError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            acked = [b"first"]
            for i in range(50):
                await store.append("s", AppendInput([AppendRecord(f"a{i}".encode())]))
                acked.append(f"a{i}".encode())
            nodes[0].kill()  # whichever node it was, two of three replicas remain: a quorum
            for i in range(50):
                await store.append("s", AppendInput([AppendRecord(f"b{i}".encode())]))
                acked.append(f"b{i}".encode())
            nodes[0].start()
            for i in range(20):
                await store.append("s", AppendInput([AppendRecord(f"c{i}".encode())]))
                acked.append(f"c{i}".encode())
            records = await store.read_all("s")
            assert [r.body for r in records] == acked
            assert [r.seq_num for r in records] == list(range(len(acked)))
            kv = store.kv("leases")  # KV buckets replicate too
            revision = await kv.create("k", b"v")
            assert (await kv.get("k")) is not None
            assert revision > 0
    finally:
        for node in nodes:
            node.kill()
