"""LangGraph baseline for the fan-out/merge workload: `python bench/fanout_langgraph.py`.

Needs only `langgraph`, `langgraph-checkpoint-sqlite` and `pydantic` (none of them Parallax dependencies).
N instant agents run in parallel, each returning a `Contribution`; one merge step combines all N. Fan-out is the
Send API (`START` -> N `worker` tasks in one superstep); each worker appends to a list channel with an
`operator.add` reducer; `merge` builds the result. Every step is durable: a `SqliteSaver` on a file (WAL, set by
`setup()`), `PRAGMA synchronous=FULL` set explicitly (the Parallax store default), `invoke(..., durability="sync")`.

API: `build_langgraph_fanout(db_path)` does all setup (connection, checkpointer, compile) and returns a
`LangGraphFanout`: call it as `run(n) -> dict` (fresh `thread_id` per call); release it with `.close()` or `with`.
"""

from __future__ import annotations

import operator
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel


class Contribution(BaseModel):
    agent: str
    value: int
    note: str


class FanoutState(TypedDict, total=False):
    n: int
    contributions: Annotated[list[Contribution], operator.add]
    result: dict[str, Any]


class AgentInput(TypedDict):
    agent: str
    index: int


def fan_out(state: FanoutState) -> list[Send]:
    return [Send("worker", AgentInput(agent=f"agent-{i}", index=i)) for i in range(state["n"])]


def worker(task: AgentInput) -> FanoutState:
    # A worker sees only its Send payload, not the graph state.
    return {"contributions": [Contribution(agent=task["agent"], value=task["index"], note="ok")]}


def merge(state: FanoutState) -> FanoutState:
    contributions = state["contributions"]
    return {
        "result": {
            "count": len(contributions),
            "total": sum(c.value for c in contributions),
            "agents": sorted(c.agent for c in contributions),
        }
    }


class LangGraphFanout:
    """A compiled fan-out graph bound to one SQLite checkpoint file."""

    def __init__(self, db_path: str) -> None:
        self.conn = sqlite3.connect(db_path, check_same_thread=False)
        self.conn.execute("PRAGMA synchronous=FULL")
        # Allow-listing the model lets checkpoints be read back (get_state, resume) without a warning.
        serde = JsonPlusSerializer(allowed_msgpack_modules=[(Contribution.__module__, Contribution.__name__)])
        self.saver = SqliteSaver(self.conn, serde=serde)
        self.saver.setup()
        builder = StateGraph(FanoutState)
        builder.add_node("worker", worker)  # type: ignore[call-overload]  # input schema AgentInput, from the hint
        builder.add_node("merge", merge)
        builder.add_conditional_edges(START, fan_out, ["worker"])
        builder.add_edge("worker", "merge")
        builder.add_edge("merge", END)
        self.graph = builder.compile(checkpointer=self.saver)

    def run(self, n: int) -> dict[str, Any]:
        out = self.graph.invoke({"n": n}, config={"configurable": {"thread_id": uuid.uuid4().hex}}, durability="sync")
        result: dict[str, Any] = out["result"]
        return result

    __call__ = run

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LangGraphFanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_langgraph_fanout(db_path: str) -> LangGraphFanout:
    return LangGraphFanout(db_path)


if __name__ == "__main__":
    reps = 5
    with tempfile.TemporaryDirectory() as tmp, build_langgraph_fanout(str(Path(tmp) / "lg.db")) as run:
        run(10)  # warm-up: first-call imports and table pages
        for n in (100, 1000):
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                result = run(n)
                times.append(time.perf_counter() - t0)
                if result["count"] != n or len(set(result["agents"])) != n:
                    raise RuntimeError(f"merged {result['count']} contributions, expected {n}")
            print(f"langgraph fanout n={n}: median {statistics.median(times) * 1000:.1f} ms over {reps} runs")
