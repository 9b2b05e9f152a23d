"""Streaming agents benchmark: many agents streaming chunks at once, durably, three ways.

    python bench/streaming.py [--quick] [--reps N] [--agents 200] [--chunks 200]

N agents at once, each streaming C chunks of 24 characters into its own stream (N x C chunk
records' worth of text, durable in SQLite: WAL, synchronous=FULL, the store's defaults):

- llm: `llm` agents on the scripted model (pydantic-ai's FunctionModel, the offline double at
  the model boundary), each answer streamed in C chunks, through the whole engine;
- py: `python` agents calling `ctx.emit` C times, through the whole engine;
- raw_batch: the floor: the same N x C chunk records (the same events, encoded the same way)
  appended straight to the store, one C-record append per stream, all streams at once (the
  store group-commits them).

Only the run itself is timed (the run is created beforehand); the three alternate within each
repetition, in one process and on one event loop, each on its own database file, and each
figure is the median of the repetitions (spread: min-max). After every run the benchmark reads
each agent's stream back and checks that its chunk records hold the whole answer, in order
(py and raw_batch: exactly C records; llm: the text, however many records it came in). Last
line:

    RESULT llm_chunks_per_s=A py_chunks_per_s=B raw_batch_chunks_per_s=C

with the medians in chunks per second (N x C / wall).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import agent_stream
from parallax.engine.options import RunOptions
from parallax.streams import AppendInput
from parallax.streams.folded import event_record
from parallax.streams.sqlite import SqliteStore
from streaming_agents import pieces

CHUNK_TYPE = ev.AGENT_CHUNK.encode()
OPTIONS = RunOptions(use_cache=False)  # every run streams: nothing is served from the result cache


def llm_plan(agents: int, answers: Path) -> Plan:
    spec = AgentSpec(kind="llm", model=f"scripted:{answers}")
    steps = tuple(Step(id=f"a{i}", kind="agent", agent=spec, prompt="Stream your answer.") for i in range(agents))
    return Plan(name=f"streaming-llm-{agents}", steps=steps, concurrency=agents)


def py_plan(agents: int, chunks: int) -> Plan:
    spec = AgentSpec(kind="python", ref="streaming_agents:stream_chunks")
    steps = tuple(Step(id=f"a{i}", kind="agent", agent=spec) for i in range(agents))
    return Plan(name=f"streaming-py-{agents}", steps=steps, concurrency=agents, inputs={"chunks": chunks})


async def chunk_texts(store: SqliteStore, stream: str) -> list[str]:
    records = await store.read_all(stream)
    return [json.loads(r.body)["text"] for r in records if r.header(b"type") == CHUNK_TYPE]


async def engine_once(store: SqliteStore, plan: Plan, answer: str, exact: int | None) -> tuple[float, float]:
    """One run of `plan`: its wall time, and the median chunk records per agent (checked)."""
    run_id = await api.create_run(store, plan)  # setup: the run exists, with its plan
    gc.collect()
    start = time.perf_counter()
    state = await api.resume_run(store, run_id, OPTIONS)
    elapsed = time.perf_counter() - start
    if state.status != "succeeded":
        failed = {k: s.error for k, s in state.steps.items() if s.status != "succeeded"}
        raise RuntimeError(f"run {run_id} did not succeed: {state.status} {list(failed.items())[:3]}")
    counts = []
    for step in plan.steps:
        texts = await chunk_texts(store, agent_stream(run_id, step.id))
        if "".join(texts) != answer or (exact is not None and len(texts) != exact):
            raise RuntimeError(f"run {run_id}: {step.id}'s stream holds {len(texts)} chunk records, not the answer")
        counts.append(len(texts))
    return elapsed, statistics.median(counts)


async def raw_once(store: SqliteStore, rep: str, agents: int, chunks: list[str]) -> tuple[float, float]:
    """The same chunk events, encoded as the agents' log encodes them, appended directly."""
    names = [f"a{i}" for i in range(agents)]

    async def one(name: str) -> None:
        records = [event_record(Event(ev.AGENT_CHUNK, {"text": c}, step=name, agent=name)) for c in chunks]
        await store.append(f"raw/{rep}/agents/{name}", AppendInput(records))

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(one(name) for name in names))
    elapsed = time.perf_counter() - start
    answer = "".join(chunks)
    for name in names:
        texts = await chunk_texts(store, f"raw/{rep}/agents/{name}")
        if "".join(texts) != answer or len(texts) != len(chunks):
            raise RuntimeError(f"raw: {name}'s stream holds {len(texts)} chunk records, not the answer")
    return elapsed, float(len(chunks))


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--reps", type=int, help="repetitions per path (median reported)")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    n, c = args.agents, args.chunks
    chunks = pieces(c)
    answer = "".join(chunks)
    total = n * c

    rates: dict[str, list[float]] = {"llm": [], "py": [], "raw_batch": []}
    records: dict[str, list[float]] = {"llm": [], "py": [], "raw_batch": []}
    with tempfile.TemporaryDirectory(prefix="parallax-streaming-") as tmp:
        root = Path(tmp)
        answers = root / "answers.json"
        answers.write_text(json.dumps([answer]))  # every llm agent answers the same, in c chunks

        async def alternate() -> None:
            async with (
                SqliteStore(root / "llm.db") as llm_store,
                SqliteStore(root / "py.db") as py_store,
                SqliteStore(root / "raw.db") as raw_store,
            ):
                paths: dict[str, Callable[[int], Awaitable[tuple[float, float]]]] = {
                    "llm": lambda agents: engine_once(llm_store, llm_plan(agents, answers), answer, None),
                    "py": lambda agents: engine_once(py_store, py_plan(agents, c), answer, c),
                    "raw_batch": lambda agents: raw_once(raw_store, f"r{time.monotonic_ns()}", agents, chunks),
                }
                for run in paths.values():  # warm imports and caches everywhere
                    await run(10)
                order = list(paths)
                for rep in range(reps):
                    for name in order[rep % 3 :] + order[: rep % 3]:  # each path in each position in turn
                        elapsed, per_agent = await paths[name](n)
                        rates[name].append(total / elapsed)
                        records[name].append(per_agent)

        asyncio.run(alternate())

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{n} agents x {c} chunks ({total:,} chunks of 24 characters), SQLite WAL synchronous=FULL; "
          f"{reps} reps, medians (min-max)")  # fmt: skip
    print(f"{'path':<11}{'chunks/s':>12}{'spread':>20}{'chunk records/agent':>22}{'x raw_batch':>13}")
    for name in rates:
        per_agent = statistics.median(records[name])
        print(f"{name:<11}{med[name]:>12,.0f}{spread(rates[name]):>20}{per_agent:>22.0f}"
              f"{med[name] / med['raw_batch']:>13.3f}")  # fmt: skip
    print(f"llm / py: {med['llm'] / med['py']:.3f}")
    print(
        f"RESULT llm_chunks_per_s={med['llm']:.0f} py_chunks_per_s={med['py']:.0f} "
        f"raw_batch_chunks_per_s={med['raw_batch']:.0f}"
    )


if __name__ == "__main__":
    main()
