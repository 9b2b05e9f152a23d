"""Fan-out/merge benchmark: Parallax beside LangGraph and DBOS Transact doing the same work.

    python bench/fanout.py [--quick] [--reps N]      # the comparison; 20,000 only without --quick
    python bench/fanout.py --scale 20000 100000     # Parallax alone at large N: wall, RSS, database

N instant agents each return a small pydantic model and one merge step combines them; every
step is durable in SQLite, WAL with synchronous=FULL on every side (Parallax: its store's
defaults; LangGraph: SqliteSaver on a file, invoke(..., durability="sync"); DBOS Transact: an
async workflow gathering N steps, then a merge step, its system database on a file). Only the
run itself is timed, after setup; the systems alternate within each N, in one process and on
one event loop, and each figure is the median of the repetitions (spread: min-max). Database
sizes come from one fresh run at N=5,000 per system, each in its own process. Last line:

    RESULT fanout1000_lg=A fanout5000_lg=B fanout5000_dbos=C growth_100_to_5000=D
           per_agent_overhead_ms=E db_mb_5000=F lg_db_mb_5000=G dbos_db_mb_5000=H

fanoutN_lg / fanoutN_dbos = Parallax wall / peer wall at N (lower is better); growth = per-agent
wall at 5,000 / at 100 (1.0 is flat); per_agent_overhead_ms = Parallax wall at N=1,000 / 1,000;
db_mb_5000 = Parallax's database after one N=5,000 run (G, H: the peers').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
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


async def dbos_once(run: object, n: int) -> float:
    start = time.perf_counter()
    result = await run(n)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    if result["count"] != n or result["agents"] != n:
        raise RuntimeError("dbos did not merge every contribution")
    return elapsed


def files_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def measure(system: str, n: int) -> dict[str, float]:
    """One fresh run of `system` at N in this process: wall, database bytes, peak RSS."""
    with tempfile.TemporaryDirectory(prefix=f"parallax-{system}-") as tmp:
        db = Path(tmp) / f"{system}.db"
        if system == "parallax":

            async def go() -> float:
                async with SqliteStore(db) as store:
                    return await parallax_once(store, fanout_plan(n))

            wall = asyncio.run(go())
        elif system == "langgraph":
            with build_langgraph_fanout(str(db)) as graph:
                wall = langgraph_once(graph, n)
        else:
            from fanout_dbos import start_dbos, stop_dbos

            async def go_dbos() -> float:
                run = start_dbos(str(db))
                try:
                    return await dbos_once(run, n)
                finally:
                    stop_dbos()

            wall = asyncio.run(go_dbos())
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"wall_s": wall, "db_bytes": files_bytes(db), "rss_mb": rss_mb}


def in_subprocess(system: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", system, str(n)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--scale", type=int, nargs="+", metavar="N")
    parser.add_argument("--measure", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return
    if args.scale:
        print(f"{'N':>8}{'wall s':>10}{'per agent ms':>14}{'peak RSS MB':>13}{'database MB':>13}")
        for n in args.scale:
            m = in_subprocess("parallax", n)
            per_agent = m["wall_s"] * 1000 / n
            print(f"{n:>8}{m['wall_s']:>10.2f}{per_agent:>14.3f}{m['rss_mb']:>13.0f}{m['db_bytes'] / 1e6:>13.1f}")
        return
    reps = args.reps or (3 if args.quick else 5)
    sizes = (100, 1000, 5000) if args.quick else (100, 1000, 5000, 20000)
    assert Contribution.model_fields  # the same model LangGraph's workers return
    from fanout_dbos import start_dbos, stop_dbos

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="parallax-fanout-") as tmp:
        root = Path(tmp)
        graph = build_langgraph_fanout(str(root / "langgraph.db"))

        async def alternate() -> None:
            # One long-lived database per system, as a user's process has. LangGraph's invoke is
            # synchronous and runs on this loop's thread with nothing else scheduled; DBOS's
            # workflow runs on this loop: no system disturbs another's timed run.
            dbos = start_dbos(str(root / "dbos.db"))
            try:
                async with SqliteStore(root / "parallax.db") as store:
                    await parallax_once(store, fanout_plan(10))  # warm imports and caches everywhere
                    graph.run(10)
                    await dbos_once(dbos, 10)
                    for n in sizes:
                        plan = fanout_plan(n)
                        for _ in range(reps if n < 5000 else max(2, reps - 2)):
                            times.setdefault(f"px{n}", []).append(await parallax_once(store, plan))
                            times.setdefault(f"lg{n}", []).append(langgraph_once(graph, n))
                            if n <= 5000:  # DBOS at 20,000 would take minutes per run
                                times.setdefault(f"dbos{n}", []).append(await dbos_once(dbos, n))
            finally:
                stop_dbos()

        asyncio.run(alternate())
        graph.close()
    size = {system: in_subprocess(system, 5000)["db_bytes"] / 1e6 for system in ("parallax", "langgraph", "dbos")}

    med = {k: statistics.median(v) for k, v in times.items()}
    print("SQLite on every side: WAL, synchronous=FULL. Medians in seconds (min-max); ratios are Parallax/peer.")
    print(f"{'N':>7}{'Parallax':>20}{'LangGraph':>22}{'DBOS':>22}{'px/lg':>8}{'px/dbos':>9}{'px ms/agent':>12}")
    for n in sizes:
        px, lg, db = med[f"px{n}"], med[f"lg{n}"], med.get(f"dbos{n}")
        dbos_cell = f"{db:.3f} ({spread(times[f'dbos{n}'])})" if db is not None else "-"
        ratio_dbos = f"{px / db:.3f}" if db is not None else "-"
        px_cell = f"{px:.3f} ({spread(times[f'px{n}'])})"
        lg_cell = f"{lg:.3f} ({spread(times[f'lg{n}'])})"
        print(f"{n:>7}{px_cell:>20}{lg_cell:>22}{dbos_cell:>22}{px / lg:>8.3f}{ratio_dbos:>9}{px * 1000 / n:>12.3f}")
    print(f"database after one N=5,000 run: Parallax {size['parallax']:.1f} MB, LangGraph {size['langgraph']:.1f} MB, "
          f"DBOS {size['dbos']:.1f} MB")  # fmt: skip
    growth = (med["px5000"] / 5000) / (med["px100"] / 100)
    print(
        f"RESULT fanout1000_lg={med['px1000'] / med['lg1000']:.3f} fanout5000_lg={med['px5000'] / med['lg5000']:.3f} "
        f"fanout5000_dbos={med['px5000'] / med['dbos5000']:.4f} growth_100_to_5000={growth:.2f} "
        f"per_agent_overhead_ms={med['px1000']:.4f} db_mb_5000={size['parallax']:.1f} "
        f"lg_db_mb_5000={size['langgraph']:.1f} dbos_db_mb_5000={size['dbos']:.1f}"
    )


if __name__ == "__main__":
    main()
