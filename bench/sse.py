"""SSE fan-out: many clients tailing one run's stream on a real `parallax serve`.

    python bench/sse.py [--clients 50] [--events 10000]

The stream is written while the clients watch (half before they connect, half after). Each
client must receive every event exactly once, in order. Prints the server's resident memory
before and after (from /proc), the wall time and the delivery rate. Last line:

    RESULT clients=C events=E all_in_order=1 wall_s=W events_per_s=R rss_before_mb=A rss_peak_mb=B
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.live_server import serve

from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore

TOKEN = "bench-sse"
STREAM = "runs/bench/control"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(db: Path, start: int, count: int) -> None:
    async with SqliteStore(db) as store:
        for i in range(start, start + count, 1000):
            batch = [AppendRecord(body=json.dumps({"n": n}).encode(), headers=((b"type", b"tick"),))
                     for n in range(i, min(i + 1000, start + count))]  # fmt: skip
            await store.append(STREAM, AppendInput(batch))


async def watch(base: str, want: int) -> bool:
    expected = 0
    async with (
        httpx.AsyncClient(timeout=300) as http,
        http.stream("GET", f"{base}/streams/{STREAM}/events", params={"token": TOKEN}) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                if json.loads(line[6:])["body"]["n"] != expected:
                    return False
                expected += 1
                if expected == want:
                    return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sse.db"
        asyncio.run(fill(db, 0, args.events // 2))
        with serve(db, TOKEN, Path(tmp) / "server.log") as (base, process):
            before = rss_mb(process.pid)
            peak = before

            async def run() -> list[bool]:
                nonlocal peak
                started = time.perf_counter()
                clients = [asyncio.create_task(watch(base, args.events)) for _ in range(args.clients)]
                await asyncio.sleep(0.5)
                await fill(db, args.events // 2, args.events - args.events // 2)
                while not all(c.done() for c in clients):
                    peak = max(peak, rss_mb(process.pid))
                    await asyncio.sleep(0.2)
                results = await asyncio.gather(*clients)
                run.wall = time.perf_counter() - started  # type: ignore[attr-defined]
                return results

            results = asyncio.run(run())
            wall = run.wall  # type: ignore[attr-defined]
    ok = all(results)
    rate = args.clients * args.events / wall
    print(f"{args.clients} clients x {args.events} events: all in order: {ok}; {wall:.1f} s; {rate:.0f} events/s; "
          f"server RSS {before:.0f} MB -> peak {peak:.0f} MB")  # fmt: skip
    print(
        f"RESULT clients={args.clients} events={args.events} all_in_order={int(ok)} wall_s={wall:.1f} "
        f"events_per_s={rate:.0f} rss_before_mb={before:.0f} rss_peak_mb={peak:.0f}"
    )


if __name__ == "__main__":
    main()
