"""`parallax streams demo`: a walkthrough of the stream store that every later layer stands on.

Two writers race for the same slot of a control stream; exactly one wins and the loser re-reads
and decides again. A fenced writer locks out a stale one. A fork branches a run's history. A
tail in a second process sees every append as it happens. All of it on the real store file.
"""

from __future__ import annotations

import asyncio
import sys
import time

import click

from parallax.cli.context import CliContext, run_with_store
from parallax.core.errors import FencingTokenMismatch, SeqNumMismatch
from parallax.streams.base import AppendInput, AppendRecord, StreamStore


def say(text: str) -> None:
    click.echo(text)


async def walkthrough(store: StreamStore, store_url: str) -> None:
    run = f"demo/{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}"
    control = f"{run}/control"
    say(f"store: {store_url}\nrun:   {run}\n")

    say("1. A tail in another process follows the control stream live.")
    follower = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "parallax", "--store", store_url, "streams", "tail", control, "--wait"],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        say("\n2. Two workers race to claim task-1 with a conditional append at seq 0.")
        await store.create(control)

        async def claim(worker: str) -> str:
            record = AppendRecord(f"task-1 claimed by {worker}".encode(), ((b"type", b"task.claimed"),))
            try:
                ack = await store.append(control, AppendInput([record], match_seq_num=0))
            except SeqNumMismatch as e:
                return f"   {worker}: lost (the tail was already {e.expected}); re-reads and picks other work"
            return f"   {worker}: won at seq {ack.start.seq_num}"

        for line in await asyncio.gather(claim("worker-a"), claim("worker-b")):
            say(line)

        say("\n3. A coordinator fences the stream; a stale coordinator is locked out.")
        await store.fence(control, "coordinator-2")
        try:
            await store.append(control, AppendInput([AppendRecord(b"stale decision")], fencing_token="coordinator-1"))
        except FencingTokenMismatch as e:
            say(f"   coordinator-1 refused: {e}")
        await store.append(control, AppendInput([AppendRecord(b"run.finished")], fencing_token="coordinator-2"))
        say("   coordinator-2 appended run.finished")

        say("\n4. Fork the run's control stream at seq 1 to try a different decision from there.")
        await store.fork(control, f"{run}-fork/control", 1)
        await store.append(f"{run}-fork/control", AppendInput([AppendRecord(b"a different path")]))
        for name in (control, f"{run}-fork/control"):
            records = await store.read_all(name)
            shown = ", ".join(f"{r.seq_num}:{(r.body or r.headers[0][1]).decode()}" for r in records)
            say(f"   {name}: {shown}")

        tail = await store.check_tail(control)
        say(f"\n5. What the other process saw, live ({tail.seq_num} records):")
        assert follower.stdout is not None
        for _ in range(tail.seq_num):
            seen = await asyncio.wait_for(follower.stdout.readline(), 10)
            say(f"   {seen.decode().rstrip()}")
    finally:
        follower.terminate()
        await follower.wait()
    say(f"\nInspect it yourself: parallax --store {store_url} streams read {control}")


@click.command("demo")
@click.pass_context
def streams_demo(ctx: click.Context) -> None:
    """Walk through durable streams: races, fencing, forks and live tails."""
    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]
    run_with_store(ctx, lambda store: walkthrough(store, cli.store_url))
