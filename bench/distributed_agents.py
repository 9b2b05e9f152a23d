"""The agent of bench/distributed.py: note the execution, then await 0.2 s (a model call's
worth of waiting, without a model)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from parallax.agents.base import AgentContext


async def wait_step(ctx: AgentContext) -> dict[str, Any]:
    settings = ctx.input["input"]
    with (Path(settings["dir"]) / "executions").open("a") as f:
        f.write(f"{ctx.step_id} {os.getpid()} {time.time_ns() // 1_000_000}\n")
    await asyncio.sleep(float(settings.get("sleep", 0.2)))
    return {"step": ctx.step_id}
