"""Fan-out/merge benchmark: Parallax beside LangGraph doing the same work, in one process.

    python bench/fanout.py [--quick] [--reps N]

N instant python agents each return a small pydantic model and one merge step combines them;
every step is durable in SQLite with each system's durable settings (Parallax: the store's
defaults, WAL + synchronous=FULL; LangGraph: SqliteSaver on a file with synchronous=FULL,
invoke(..., durability="sync")). Only the run itself is timed, after setup; the two systems
alternate, and each figure is the median of the repetitions. Last line:

    RESULT fanout100_ratio=A fanout1000_ratio=B sleep50_wall_s=C per_agent_overhead_ms=D

fanoutN_ratio = Parallax wall / LangGraph wall (lower is better); sleep50_wall_s = 50 agents
that each await 1 s at concurrency 50; per_agent_overhead_ms = Parallax wall at N=1000 / 1000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout_agents import Contribution
from fanout_langgraph import build_langgraph_fanout
from parallax.core.plan import AgentSpec, MergeSpec, Plan, Step
from parallax.engine import api
from parallax.engine.runner import Runner
from parallax.streams.sqlite import SqliteStore


def fanout_plan(n: int, fn: str = "contribute", concurrency: int | None = None) -> Plan:
    agents = tuple(
        Step(
            id=f"a{i}",
            kind="agent",
            agent=AgentSpec(kind="python", ref=f"fanout_agents:{fn}"),
            output="fanout_agents:Contribution",
        )
        for i in range(n)
    )
    merge = Step(
        id="merge", kind="merge", after=tuple(s.id for s in agents), merge=MergeSpec(ignore=("agent", "value"))
    )
    return Plan(name=f"fanout-{n}", steps=(*agents, merge), concurrency=concurrency or n)


async def parallax_once(store: SqliteStore, plan: Plan) -> float:
    run_id = await api.create_run(store, plan)  # setup: the run exists, with its plan
    runner = Runner(store, run_id)
    start = time.perf_counter()
    state = await runner.run()
    elapsed = time.perf_counter() - start
    if state.status != "succeeded" or len(state.result["document"]) != len(plan.steps) - 1:
        raise RuntimeError(f"parallax run {run_id} did not merge every contribution: {state.status}")
    return elapsed


def langgraph_once(graph: object, n: int) -> float:
    start = time.perf_counter()
    result = graph.run(n)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    if result["count"] != n:
        raise RuntimeError("langgraph did not merge every contribution")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    args = parser.parse_args()
    reps = args.reps or (5 if args.quick else 9)
    assert Contribution.model_fields  # the same model LangGraph's workers return

    with tempfile.TemporaryDirectory(prefix="parallax-fanout-") as tmp:
        root = Path(tmp)
        graph = build_langgraph_fanout(str(root / "langgraph.db"))
        times: dict[str, list[float]] = {}

        async def alternate() -> float:
            # One long-lived store, as a user's process has; LangGraph's invoke is synchronous and
            # runs on this loop's thread with nothing else scheduled, so neither side disturbs the other.
            async with SqliteStore(root / "parallax.db") as store:
                await parallax_once(store, fanout_plan(10))  # warm imports and caches on both sides
                graph.run(10)
                for n in (100, 1000):
                    plan = fanout_plan(n)
                    for _ in range(reps):
                        times.setdefault(f"px{n}", []).append(await parallax_once(store, plan))
                        times.setdefault(f"lg{n}", []).append(langgraph_once(graph, n))
                sleepy = fanout_plan(50, "sleep_one_second", concurrency=50)
                return statistics.median([await parallax_once(store, sleepy) for _ in range(max(3, reps // 2))])

        sleep50 = asyncio.run(alternate())
        graph.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    per_agent_ms = med["px1000"] * 1000 / 1000  # seconds for 1000 agents -> ms per agent
    print(f"{reps} reps, medians (seconds)")
    print(f"{'N':>6}{'Parallax':>12}{'LangGraph':>12}{'ratio':>9}")
    for n in (100, 1000):
        print(f"{n:>6}{med[f'px{n}']:>12.4f}{med[f'lg{n}']:>12.4f}{med[f'px{n}'] / med[f'lg{n}']:>9.3f}")
    print(f"50 agents awaiting 1 s at concurrency 50: {sleep50:.3f} s")
    print(
        f"RESULT fanout100_ratio={med['px100'] / med['lg100']:.3f} "
        f"fanout1000_ratio={med['px1000'] / med['lg1000']:.3f} "
        f"sleep50_wall_s={sleep50:.3f} per_agent_overhead_ms={per_agent_ms:.4f}"
    )


if __name__ == "__main__":
    main()
