"""One of the processes racing to claim tasks in the multi-process test (and in
bench/taskgraph.py): claims until the board is finished, sometimes stalling past its lease to
make another worker take the task over. Every piece of work it does is logged to a file, so the
test can check from outside that no two workers ever worked on one task at once."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

from parallax.core.tasks import TASK_STARTED, TASK_SUCCEEDED, TaskGraphSpec
from parallax.engine.taskboard import TaskClient
from parallax.streams.sqlite import SqliteStore


async def main(db: str, run_id: str, spec_file: str, worker: str, log_file: str, stall: float, seed: int) -> None:
    spec = TaskGraphSpec.model_validate_json(Path(spec_file).read_text())
    rng = random.Random(seed)
    async with SqliteStore(db) as store:
        client = TaskClient(store, run_id, worker, spec)
        with open(log_file, "a") as log:  # noqa: ASYNC230 (a local log file, written between awaits)
            while True:
                claim = await client.claim()
                if claim is None:
                    if client.board.finished:
                        return
                    await client.wait_for_change(0.05)
                    continue
                stalled = rng.random() < stall
                if stalled:  # go quiet past the lease: someone else must take the task over
                    await asyncio.sleep(spec.lease_s + 0.1)
                started = await client.report(TASK_STARTED, claim)
                if started:
                    log.write(json.dumps({"task": claim.task, "worker": worker, "attempt": claim.attempt,
                                          "start": time.time()}) + "\n")  # fmt: skip
                    log.flush()
                    await asyncio.sleep(rng.uniform(0, 0.004))
                done = await client.report(TASK_SUCCEEDED, claim, commit=f"{worker}-{claim.attempt}")
                if started:
                    log.write(json.dumps({"task": claim.task, "worker": worker, "attempt": claim.attempt,
                                          "end": time.time(), "accepted": done}) + "\n")  # fmt: skip
                    log.flush()


if __name__ == "__main__":
    db, run_id, spec_file, worker, log_file, stall, seed = sys.argv[1:8]
    asyncio.run(main(db, run_id, spec_file, worker, log_file, float(stall), int(seed)))
