"""Python agents used by the engine tests, referenced by import path like any user's agents.
They keep their side effects in files under `input.dir`, so counts survive processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from parallax.agents.base import AgentContext
from parallax.core.errors import AgentFailed


class View(BaseModel):
    agent: str
    database: str
    rate_limit: int
    items: list[str] = []


class Scored(BaseModel):
    answer: str
    confidence: float


def _dir(ctx: AgentContext) -> Path:
    return Path(ctx.input["input"]["dir"])


def count(ctx: AgentContext, name: str | None = None) -> int:
    """Record one execution of this step; return how many there have been."""
    path = _dir(ctx) / f"{name or ctx.step_id}.count"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


async def view(ctx: AgentContext) -> View:
    count(ctx)
    settings = ctx.input["input"].get("views", {}).get(ctx.step_id, {})
    await asyncio.sleep(float(settings.get("sleep", 0)))
    return View(
        agent=ctx.step_id,
        database=settings.get("database", "postgres"),
        rate_limit=int(settings.get("rate_limit", 10)),
        items=settings.get("items", []),
    )


async def flaky(ctx: AgentContext) -> dict[str, Any]:
    n = count(ctx)
    if n <= int(ctx.input["input"].get("fail_times", 2)):
        raise AgentFailed(f"transient failure {n}", retryable=True)
    return {"attempts": n}


async def broken(ctx: AgentContext) -> dict[str, Any]:
    count(ctx)
    raise AgentFailed("permanent failure", retryable=False)


async def buggy(ctx: AgentContext) -> dict[str, Any]:
    raise ZeroDivisionError("the agent itself has a bug")


async def slow(ctx: AgentContext) -> dict[str, Any]:
    count(ctx)
    await asyncio.sleep(float(ctx.input["input"].get("sleep", 30)))
    return {"slept": True}


async def held(ctx: AgentContext) -> dict[str, Any]:
    """Under way until the file `input.release` exists: a step that runs for as long as a test
    needs it to (at most two minutes)."""
    count(ctx)
    release = Path(ctx.input["input"]["release"])
    deadline = asyncio.get_running_loop().time() + 120
    while not release.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise AgentFailed(f"{release} never appeared", retryable=False)
        await asyncio.sleep(0.01)
    return {"released": True}


async def concurrent(ctx: AgentContext) -> dict[str, Any]:
    """Tracks how many run at once in a file, to observe the concurrency cap."""
    path = _dir(ctx) / "running"
    peak_path = _dir(ctx) / "peak"
    now = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(now))
    peak = max(now, int(peak_path.read_text()) if peak_path.exists() else 0)
    peak_path.write_text(str(peak))
    await asyncio.sleep(0.05)
    path.write_text(str(int(path.read_text()) - 1))
    return {"ok": True}


async def timed(ctx: AgentContext) -> dict[str, Any]:
    """Appends start/end times (monotonic, cross-process) to a shared log."""
    with (_dir(ctx) / "timeline").open("a") as f:
        f.write(json.dumps({"step": ctx.step_id, "event": "start", "t": asyncio.get_running_loop().time()}) + "\n")
    await asyncio.sleep(float(ctx.input["input"].get("sleeps", {}).get(ctx.step_id, 0)))
    with (_dir(ctx) / "timeline").open("a") as f:
        f.write(json.dumps({"step": ctx.step_id, "event": "end", "t": asyncio.get_running_loop().time()}) + "\n")
    return {"step": ctx.step_id}


async def wrong_shape(ctx: AgentContext) -> dict[str, Any]:
    count(ctx)
    return {"agent": ctx.step_id, "database": 5}


async def reader(ctx: AgentContext) -> dict[str, Any]:
    """Reads its upstream's stream (granted) and then a stream it was not granted."""
    upstream = ctx.input["input"]["read_ok"]
    records = await ctx.read(upstream)
    await ctx.read(ctx.input["input"]["read_denied"])
    return {"read": len(records)}


async def chatty(ctx: AgentContext) -> dict[str, Any]:
    for i in range(5):
        ctx.emit(f"chunk {i} ")
        await asyncio.sleep(0)
    return {"said": 5}


async def side_effect(ctx: AgentContext) -> dict[str, Any]:
    """One line per execution in a shared file, then a short pause: the crash tests count these."""
    with (_dir(ctx) / "executions").open("a") as f:
        f.write(f"{ctx.step_id} {os.getpid()}\n")
    await asyncio.sleep(float(ctx.input["input"].get("sleep", 0.02)))
    return {"step": ctx.step_id, "value": len(ctx.step_id)}


async def peek(ctx: AgentContext) -> dict[str, Any]:
    """A cohort member that tries to read its own cohort's stream and every other cohort's."""
    from parallax.core.errors import GrantDenied

    mine = ctx.step_id.split(".")[0]
    own = f"runs/{ctx.run_id}/cohorts/{mine}"
    seen: dict[str, Any] = {"own": len(await ctx.read(own)) if ctx.grants.may_read(own) else "no grant"}
    for other in [c for c in ctx.input["input"]["cohorts"] if c != mine]:
        try:
            seen[other] = len(await ctx.read(f"runs/{ctx.run_id}/cohorts/{other}"))
        except GrantDenied as e:
            seen[other] = f"denied: {e}"
    await asyncio.sleep(float(ctx.input["input"].get("sleep", 0)))
    # What it was told, less the other members' turns (echoing those would grow every prompt).
    told = [line for line in (ctx.prompt or "").splitlines() if not re.match(r"^\[\d+\] p[a-z]+, round", line)]
    return {"position": json.dumps(seen, sort_keys=True), "reasoning": "\n".join(told), "confidence": 0.5}


async def moderator_script(ctx: AgentContext) -> dict[str, Any]:
    """A moderator whose decisions come from `input.decisions`, one per moderator round (by the
    step id `moderator.<n>`); `continue` when the script runs out."""
    n = int(ctx.step_id.rsplit(".", 1)[1])
    decisions = ctx.input["input"].get("decisions", [])
    return decisions[n - 1] if n <= len(decisions) else {"actions": [{"action": "continue"}]}


async def answer(ctx: AgentContext) -> Any:
    """Returns `input.answers[<step id>]` (or `input.answers[<agent name>]`): a scripted agent."""
    answers = ctx.input["input"]["answers"]
    if ctx.step_id in answers:
        return answers[ctx.step_id]
    if ctx.agent in answers:
        return answers[ctx.agent]
    raise AgentFailed(f"no scripted answer for {ctx.step_id}", retryable=False)
