"""One claiming process of bench/taskgraph.py: claim, start, finish, until the board is done."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from parallax.core.tasks import TASK_STARTED, TASK_SUCCEEDED, TaskGraphSpec
from parallax.engine.taskboard import TaskClient
from parallax.streams.sqlite import SqliteStore


async def main(db: str, run_id: str, spec_file: str, worker: str) -> None:
    spec = TaskGraphSpec.model_validate_json(Path(spec_file).read_bytes())  # noqa: ASYNC240 (once, at start)
    async with SqliteStore(db) as store:
        client = TaskClient(store, run_id, worker, spec)
        while True:
            claim = await client.claim()
            if claim is None:
                if client.board.finished:
                    return
                await client.wait_for_change(0.05)
                continue
            await client.report(TASK_STARTED, claim)
            await client.report(TASK_SUCCEEDED, claim, commit="bench")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
