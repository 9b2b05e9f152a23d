"""Worker processes for the cross-process stream tests: `python -m tests.streams.procs CMD ...`."""

from __future__ import annotations

import asyncio
import os
import sys

from parallax.core.errors import SeqNumMismatch
from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore


async def race(db: str, stream: str, rounds: int, me: str, go: str) -> None:
    """Append conditionally at the tail until the stream holds `rounds` records; print each win.
    Prints `ready` first and starts only once the file `go` exists, so every racer starts together."""
    async with SqliteStore(db) as store:
        print("ready", flush=True)
        while not os.path.exists(go):
            await asyncio.sleep(0.001)
        while True:
            tail = (await store.check_tail(stream)).seq_num
            if tail >= rounds:
                return
            try:
                await store.append(stream, AppendInput([AppendRecord(f"{me}:{tail}".encode())], match_seq_num=tail))
            except SeqNumMismatch:
                continue
            print(tail, flush=True)


async def append_forever(db: str, stream: str, workers: int) -> None:
    """Concurrent appenders that print `seq body` only after each ack; killed from outside."""
    async with SqliteStore(db) as store:

        async def worker(w: int) -> None:
            i = 0
            while True:
                body = f"{w}-{i}"
                ack = await store.append(stream, AppendInput([AppendRecord(body.encode())]))
                sys.stdout.write(f"{ack.start.seq_num} {body}\n")
                sys.stdout.flush()
                i += 1

        await asyncio.gather(*(worker(w) for w in range(workers)))


async def append_lines(db: str, stream: str) -> None:
    """Append each line of stdin as it arrives, acking on stdout."""
    async with SqliteStore(db) as store:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            ack = await store.append(stream, AppendInput([AppendRecord(line.rstrip("\n").encode())]))
            print(ack.start.seq_num, flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "race":
        asyncio.run(race(args[0], args[1], int(args[2]), args[3], args[4]))
    elif command == "append-forever":
        asyncio.run(append_forever(args[0], args[1], int(args[2])))
    elif command == "append-lines":
        asyncio.run(append_lines(args[0], args[1]))
    else:
        raise SystemExit(f"unknown command {command}")
