"""Many SSE clients tailing one stream of a real server receive every event exactly once and in
order, including the ones appended while they watch (bench/sse.py runs the 50 x 10,000 case and
reports server memory)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore
from tests.server.live_server import serve
from tests.waiting import async_wait_until

TOKEN = "sse-test-token"


async def fill(db: Path, stream: str, start: int, count: int) -> None:
    async with SqliteStore(db) as store:
        for i in range(start, start + count, 500):
            batch = [AppendRecord(body=json.dumps({"n": n}).encode(), headers=((b"type", b"tick"),))
                     for n in range(i, min(i + 500, start + count))]  # fmt: skip
            await store.append(stream, AppendInput(batch))


async def client(base: str, stream: str, want: int, seen: list[int] | None = None) -> list[int]:
    """The first `want` events' numbers (appended to `seen` as they come, for a test to watch)."""
    seen = [] if seen is None else seen
    async with (
        httpx.AsyncClient(timeout=120) as http,
        http.stream("GET", f"{base}/streams/{stream}/events", params={"token": TOKEN}) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["body"]["n"])
                if len(seen) == want:
                    break
    return seen


def test_twenty_clients_each_get_every_event_in_order(tmp_path: Path) -> None:
    db = tmp_path / "sse.db"
    asyncio.run(fill(db, "load/one", 0, 1000))
    with serve(db, TOKEN, tmp_path / "server.log") as (base, _):

        async def main() -> list[list[int]]:
            seen: list[list[int]] = [[] for _ in range(20)]
            watchers = [asyncio.create_task(client(base, "load/one", 2000, mine)) for mine in seen]
            await async_wait_until(  # every client is connected, has had the first 1000, and waits
                lambda: all(len(mine) >= 1000 for mine in seen) or any(w.done() for w in watchers),
                timeout=120,
                what="every client to have read the first 1000 events",
            )
            await fill(db, "load/one", 1000, 1000)  # appended by another writer while they watch
            return await asyncio.gather(*watchers)

        results = asyncio.run(asyncio.wait_for(main(), 240))
    for seen in results:
        assert seen == list(range(2000))
