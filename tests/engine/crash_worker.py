"""Runs (or resumes) one run and prints every control event as soon as it is acknowledged:
`python -m tests.engine.crash_worker DB RUN_ID`. The crash test kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import sys

from parallax.core.events import Event
from parallax.engine.runner import Runner, RunOptions
from parallax.streams.sqlite import SqliteStore


def acknowledged(event: Event) -> None:
    sys.stdout.write(f"{event.seq_num} {event.type} {event.step or '-'}\n")
    sys.stdout.flush()


async def main(db: str, run_id: str) -> None:
    async with SqliteStore(db) as store:
        state = await Runner(store, run_id, RunOptions(on_event=acknowledged)).run()
        sys.stdout.write(f"FINISHED {state.status}\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
