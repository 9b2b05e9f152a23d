"""Stream store benchmark: the SQLite store beside plain `sqlite3` doing the same work.

    python bench/streams.py [--quick] [--reps N]

Everything runs on files in a fresh temp dir, baselines and Parallax alternating in one
process, each measurement repeated and reported as its median. The last line is

    RESULT batched_ratio=X group_commit_ratio=Y tail_p50_ms=Z tail_p99_ms=W

- batched_ratio: records/s of 1000-record appends (200-byte bodies) to one stream through
  `SqliteStore` with default settings, over a plain `sqlite3` loop doing `executemany` of the
  same rows into the same table, one transaction per batch, same WAL and synchronous settings.
- group_commit_ratio: records/s of 32 concurrent asyncio appenders (one record per append,
  each awaiting its ack) over a plain `sqlite3` loop committing one insert per transaction.
- tail_p50_ms / tail_p99_ms: from the moment another process calls append to the moment
  `tail` in this process yields the record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore

BODY = b"x" * 200
BASELINE_TABLE = """
CREATE TABLE records (
    stream_id INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
    headers BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID
"""


def baseline_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # the store's default
    conn.execute(BASELINE_TABLE)
    return conn


def baseline_batched(path: Path, batches: int) -> float:
    conn = baseline_connection(path)
    seq = 0
    start = time.perf_counter()
    for _ in range(batches):
        now = time.time_ns() // 1_000_000
        rows = [(1, seq + i, now, b"", BODY) for i in range(1000)]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO records VALUES (?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        seq += 1000
    elapsed = time.perf_counter() - start
    conn.close()
    return batches * 1000 / elapsed


def baseline_single(path: Path, count: int) -> float:
    conn = baseline_connection(path)
    start = time.perf_counter()
    for seq in range(count):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO records VALUES (?,?,?,?,?)", (1, seq, time.time_ns() // 1_000_000, b"", BODY))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


async def parallax_batched(path: Path, batches: int) -> float:
    async with SqliteStore(path) as store:
        records = [AppendRecord(BODY) for _ in range(1000)]
        start = time.perf_counter()
        for _ in range(batches):
            await store.append("bench", AppendInput(records))
        return batches * 1000 / (time.perf_counter() - start)


async def parallax_group_commit(path: Path, per_appender: int, appenders: int = 32) -> tuple[float, float]:
    async with SqliteStore(path) as store:
        await store.create("bench")

        async def appender() -> None:
            record = [AppendRecord(BODY)]
            for _ in range(per_appender):
                await store.append("bench", AppendInput(record))

        start = time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(appenders)))
        elapsed = time.perf_counter() - start
        return per_appender * appenders / elapsed, per_appender * appenders / max(store.commits, 1)


async def tail_latency(path: Path, count: int) -> list[float]:
    async with SqliteStore(path) as store:
        await store.create("tail")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--appender", str(path), str(count), stdout=subprocess.DEVNULL
        )
        latencies: list[float] = []
        async for record in store.tail("tail"):
            latencies.append((time.monotonic_ns() - int(record.body)) / 1e6)
            if len(latencies) == count:
                break
        await proc.wait()
        return latencies


async def appender_process(path: str, count: int) -> None:
    """The other process of the tail measurement: appends with its send time as the body."""
    async with SqliteStore(path) as store:
        for _ in range(count):
            await asyncio.sleep(0.004)
            # CLOCK_MONOTONIC is one clock for every process on the machine.
            await store.append("tail", AppendInput([AppendRecord(str(time.monotonic_ns()).encode())]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement (median reported)")
    parser.add_argument("--appender", nargs=2, metavar=("DB", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.appender:
        asyncio.run(appender_process(args.appender[0], int(args.appender[1])))
        return

    reps = args.reps or (5 if args.quick else 9)
    batches = 40 if args.quick else 100
    singles = 1500 if args.quick else 4000
    per_appender = 60 if args.quick else 150
    tail_count = 300 if args.quick else 1000

    rows: dict[str, list[float]] = {k: [] for k in ("base_batched", "px_batched", "base_single", "px_group", "group")}
    with tempfile.TemporaryDirectory(prefix="parallax-bench-") as tmp:
        root = Path(tmp)
        for rep in range(reps):
            rows["base_batched"].append(baseline_batched(root / f"bb{rep}.db", batches))
            rows["px_batched"].append(asyncio.run(parallax_batched(root / f"pb{rep}.db", batches)))
            rows["base_single"].append(baseline_single(root / f"bs{rep}.db", singles))
            rate, group = asyncio.run(parallax_group_commit(root / f"pg{rep}.db", per_appender))
            rows["px_group"].append(rate)
            rows["group"].append(group)
        latencies = asyncio.run(tail_latency(root / "tail.db", tail_count))

    med = {k: statistics.median(v) for k, v in rows.items()}
    batched_ratio = med["px_batched"] / med["base_batched"]
    group_ratio = med["px_group"] / med["base_single"]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)

    print(f"SQLite {sqlite3.sqlite_version}, synchronous=FULL, WAL; {reps} reps, medians; pid {os.getpid()}")
    print(f"{'measurement':<52}{'records/s':>14}")
    print(f"{'plain sqlite3, executemany 1000 rows per txn':<52}{med['base_batched']:>14,.0f}")
    print(f"{'SqliteStore, 1000-record appends':<52}{med['px_batched']:>14,.0f}")
    print(f"{'plain sqlite3, one insert per txn':<52}{med['base_single']:>14,.0f}")
    print(f"{'SqliteStore, 32 concurrent single-record appenders':<52}{med['px_group']:>14,.0f}")
    print(f"{'  appends per group commit (median)':<52}{med['group']:>14.1f}")
    print(f"tail latency across processes over {len(latencies)} records: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(
        f"RESULT batched_ratio={batched_ratio:.2f} group_commit_ratio={group_ratio:.2f} "
        f"tail_p50_ms={p50:.2f} tail_p99_ms={p99:.2f}"
    )


if __name__ == "__main__":
    main()
