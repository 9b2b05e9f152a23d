"""The agents of bench/fanout.py, importable by name (`fanout_agents:contribute`) so that the
plan references them the way a user's plan references its agents."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from parallax.agents.base import AgentContext


class Contribution(BaseModel):
    agent: str
    value: int
    note: str


async def contribute(ctx: AgentContext) -> Contribution:
    """An instant agent: returns a small typed contribution."""
    return Contribution(agent=ctx.step_id, value=int(ctx.step_id[1:]), note="ok")


async def sleep_one_second(ctx: AgentContext) -> Contribution:
    await asyncio.sleep(1.0)
    return Contribution(agent=ctx.step_id, value=0, note="slept")
