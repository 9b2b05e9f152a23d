"""Fold snapshots: resuming from one gives exactly the state a full fold gives, reads only the
tail, and a snapshot that does not check out against the log is ignored."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.core.state import describe, fold
from parallax.engine import api
from parallax.engine.control import ControlLog, control_stream, read_events
from parallax.engine.snapshots import SNAPSHOT_EVERY, load_snapshot, load_state, snapshot_due, snapshot_stream
from parallax.streams import AppendInput, AppendRecord, StreamStore
from parallax.streams.sqlite import SqliteStore


def long_plan() -> Plan:
    agent = AgentSpec(kind="python", ref="tests.engine.agents:side_effect")
    steps = [Step(id=f"s{i}", kind="agent", agent=agent) for i in range(40)]
    final = Step(id="last", kind="agent", agent=agent, after=tuple(s.id for s in steps))
    return Plan(name="long", steps=(*steps, final), inputs={"dir": "/nonexistent"})


async def write_history(store: StreamStore, run_id: str, rounds: int) -> None:
    """What a coordinator would have written: many failed attempts, then outputs."""
    log = ControlLog(store, run_id, snapshots=True)
    await log.load()
    await log.take_over("writer")
    for i in range(40):
        step = f"s{i}"
        history = []
        for attempt in range(1, rounds + 1):
            history.append(Event(ev.STEP_STARTED, {"attempt": attempt}, step=step, agent=step))
            history.append(Event(ev.STEP_FAILED, {"attempt": attempt, "error": "x", "final": False}, step=step))
        history.append(Event(ev.STEP_OUTPUT, {"output": {"i": i}, "attempt": rounds + 1}, step=step, agent=step))
        await log.emit(*history)
    await log.close()


async def test_resume_from_a_snapshot_equals_a_full_fold(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        run_id = await api.create_run(store, long_plan(), run_id="long")
        await write_history(store, run_id, rounds=40)  # 40 x 81 = 3,240 events
        snapshots = await pointers(store, run_id)
        assert len(snapshots) == 1  # the newest; the older ones were trimmed
        found = await load_snapshot(store, run_id, control_stream(run_id))
        assert found is not None
        snapshot_state, at = found
        assert at == snapshots[-1]["at"] >= 3 * SNAPSHOT_EVERY  # one every 1,000 records
        assert snapshot_state.next_seq <= at
        from_snapshot = await api.load_run(store, run_id)
        full = fold(await read_events(store, control_stream(run_id)))
        assert describe(from_snapshot) == describe(full)
        assert from_snapshot.steps == full.steps
        assert from_snapshot.next_seq == full.next_seq


async def test_a_snapshot_that_does_not_match_the_log_is_ignored(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        run_id = await api.create_run(store, long_plan(), run_id="long")
        await write_history(store, run_id, rounds=20)
        good = await api.load_run(store, run_id)
        # A snapshot claiming a different record at its position (another log's): ignored.
        newest = (await pointers(store, run_id))[-1]
        forged = {**newest, "last_digest": "0" * 64}
        await store.append(snapshot_stream(run_id), AppendInput([AppendRecord(json.dumps(forged).encode())]))
        assert await load_snapshot(store, run_id, control_stream(run_id)) is None
        assert (await api.load_run(store, run_id)).steps == good.steps
        # A snapshot whose state blob is missing: ignored.
        gone = {**newest, "state": "sha256:" + "1" * 64}
        await store.append(snapshot_stream(run_id), AppendInput([AppendRecord(json.dumps(gone).encode())]))
        assert await load_snapshot(store, run_id, control_stream(run_id)) is None
        # Garbage: ignored.
        await store.append(snapshot_stream(run_id), AppendInput([AppendRecord(b"not json")]))
        assert (await api.load_run(store, run_id)).steps == good.steps


async def pointers(store: StreamStore, run_id: str) -> list[dict[str, object]]:
    records = await store.read_all(snapshot_stream(run_id))
    return [json.loads(r.body) for r in records if r.command is None]


def test_snapshots_cannot_run_code() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned > /tmp/parallax-pwned",))

    with pytest.raises(pickle.UnpicklingError, match="may not rebuild"):
        load_state(pickle.dumps(Evil()))
    assert not Path("/tmp/parallax-pwned").exists()


async def test_a_resumed_run_continues_from_the_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    plan = long_plan().model_copy(update={"inputs": {"dir": str(folder)}})
    async with SqliteStore(tmp_path / "s.db") as store:
        run_id = await api.create_run(store, plan, run_id="long")
        await write_history(store, run_id, rounds=30)
        state = await api.resume_run(store, run_id)
        assert state.status == "succeeded"
        assert (folder / "executions").read_text().split() == ["last", str(os.getpid())]  # only the new step ran


def test_snapshots_are_spaced_by_the_size_of_the_state() -> None:
    assert snapshot_due(1000, 0, 41) and not snapshot_due(999, 0, 41)
    assert not snapshot_due(5000, 0, 20_001)  # a large fan-out: pickling costs O(steps)...
    assert snapshot_due(20_001, 0, 20_001)  # ...so it waits for as many records
    assert snapshot_due(45_001, 25_000, 20_001) and not snapshot_due(45_000, 25_000, 20_001)


async def test_older_snapshots_are_pruned(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        run_id = await api.create_run(store, long_plan(), run_id="long")
        await write_history(store, run_id, rounds=120)  # 40 x 241 = 9,640 events
        # Appends of 241 events: a snapshot once 1,000 records have come since the last (41
        # steps: fewer than that), at 1,207, 2,412, ... 9,642.
        records = await store.read_all(snapshot_stream(run_id))
        assert [r.seq_num for r in records] == [14, 15]  # the eighth pointer, and the trim after it
        kept = await pointers(store, run_id)
        assert len(kept) == 1 and kept[0]["at"] == 9642
        blobs = {info.name.removeprefix("blobs/") for info in await store.list("blobs/")}
        assert blobs == {str(kept[0]["state"]).removeprefix("sha256:"), str(kept[0]["plan"]).removeprefix("sha256:")}
        state = await api.load_run(store, run_id)
        assert state.steps == fold(await read_events(store, control_stream(run_id))).steps
