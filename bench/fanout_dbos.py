"""DBOS Transact baseline for the fan-out/merge workload (bench extra: `pip install dbos`).

One async workflow gathers N async steps (each returns a contribution, as Parallax's agents and
LangGraph's workers do), then one merge step combines them; every step is checkpointed in
DBOS's system database, SQLite on a file. Every SQLite connection in the process is set to
WAL with `synchronous=FULL`, the settings Parallax's store and the LangGraph baseline use.

API: `start_dbos(db_path)` configures and launches DBOS (a process-wide singleton: once per
process) and returns `run(n) -> awaitable dict`; `stop_dbos()` shuts it down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy
from dbos import DBOS
from sqlalchemy import event


@event.listens_for(sqlalchemy.engine.Engine, "connect")
def _durable(connection: Any, record: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


@DBOS.step()
async def contribute(i: int) -> dict[str, Any]:
    return {"agent": f"agent-{i}", "value": i, "note": "ok"}


@DBOS.step()
async def merge(contributions: list[dict[str, Any]]) -> dict[str, Any]:
    agents = {c["agent"] for c in contributions}
    return {"count": len(contributions), "agents": len(agents)}


@DBOS.workflow()
async def fanout(n: int) -> dict[str, Any]:
    contributions = await asyncio.gather(*(contribute(i) for i in range(n)))
    return await merge(list(contributions))


def start_dbos(db_path: str) -> Callable[[int], Awaitable[dict[str, Any]]]:
    DBOS(config={"name": "parallax-fanout-bench", "system_database_url": f"sqlite:///{db_path}", "log_level": "ERROR"})
    DBOS.launch()
    return fanout


def stop_dbos() -> None:
    DBOS.destroy()
