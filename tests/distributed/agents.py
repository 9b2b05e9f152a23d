"""Agents for the distributed tests: each execution leaves a line `step pid start_ms` in a
shared file before it works, so a test can tell which process ran what, and when."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from parallax.agents.base import AgentContext
from tests.waiting import async_wait_until


async def slow(ctx: AgentContext) -> dict[str, Any]:
    """Works for `input.sleep` seconds; a step listed in `input.held` then waits for the file
    `input.release` (for at most two minutes, then fails): a run that cannot end before a test lets it."""
    settings = ctx.input["input"]
    with (Path(settings["dir"]) / "executions").open("a") as f:
        f.write(f"{ctx.step_id} {os.getpid()} {time.time_ns() // 1_000_000}\n")
    await asyncio.sleep(float(settings.get("sleep", 0.2)))
    if ctx.step_id in settings.get("held", ()):
        release = Path(settings["release"])
        await async_wait_until(release.exists, timeout=120, what=f"the test to release {ctx.step_id}")
    return {"step": ctx.step_id, "value": len(ctx.step_id)}
