"""A process that decides once on a folded stream: `python -m tests.streams.folded_procs DB STREAM ME GO`.

It folds the stream, and if nobody holds the slot yet, appends its own claim at the folded tail
(`decide_and_append`). It prints `won` or `lost`. It starts only once the file GO exists, so
every process decides at the same moment."""

from __future__ import annotations

import asyncio
import os
import sys

from parallax.core.events import Event
from parallax.streams.folded import EVENTS, FoldedStream
from parallax.streams.sqlite import SqliteStore


async def main(db: str, stream: str, me: str, go: str) -> None:
    async with SqliteStore(db) as store:
        holder: list[str] = []

        def apply(event: Event) -> bool:
            if holder:
                return False  # the slot is taken: a later claim is refused by the fold
            holder.append(str(event.data["who"]))
            return True

        folded = FoldedStream(store, stream, apply, EVENTS)
        print("ready", flush=True)
        while not os.path.exists(go):
            await asyncio.sleep(0.001)
        appended = await folded.decide_and_append(lambda: None if holder else [Event("claim", {"who": me})])
        print("won" if appended is not None and appended.all_accepted else "lost", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
