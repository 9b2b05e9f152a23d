"""Distributed execution through work boards, in one process first (two Worker objects on one
SQLite file), then the board's rules on their own."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.work import WorkBoard
from parallax.engine import api
from parallax.engine.control import read_events
from parallax.engine.work import work_stream
from parallax.engine.worker import Worker, WorkerOptions, submit
from parallax.streams.sqlite import SqliteStore
from tests.engine.test_crash_resume import crash_plan, executions


async def test_two_workers_run_a_submitted_run(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "d.db") as store:
        run_id = await api.create_run(store, crash_plan(tmp_path), run_id="dist")
        await submit(store, run_id)
        # exit once the run is closed (serving every run, a worker that the other left nothing to
        # do would wait for work forever)
        options = WorkerOptions(slots=3, lease_s=2.0, runs=(run_id,), exit_when_idle=True)
        workers = [Worker(store, f"w{i}", options) for i in range(2)]
        stats = await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 120)
        state = await api.load_run(store, run_id)
        assert state.status == "succeeded"
        # Every agent step ran exactly once, on some worker; one coordinator advanced the run.
        ran = Counter(line.split()[0] for line in executions(tmp_path))
        assert ran == Counter({f"view{i}": 1 for i in range(8)} | {"publish": 1, "notify": 1})
        assert sum(s.ran for s in stats) == 10
        assert sorted(c for s in stats for c in s.coordinated) == ["dist"]
        work = await read_events(store, work_stream(run_id))
        assert Counter(e.type for e in work)[ev.WORK_DONE] == 10
        assert state.steps["merge"].status == "succeeded"


def _event(kind: str, ts: int, **data: object) -> Event:
    return Event(kind, dict(data), timestamp=ts)


def test_board_rules() -> None:
    board = WorkBoard()
    assert board.apply(_event(ev.WORK_OFFERED, 0, id="a#1", step="a", lease_s=1.0))
    assert not board.apply(_event(ev.WORK_OFFERED, 1, id="a#1", step="a"))  # ids are unique
    assert board.apply(_event(ev.WORK_CLAIMED, 10, id="a#1", worker="w1", until_ms=1010))
    assert not board.apply(_event(ev.WORK_CLAIMED, 500, id="a#1", worker="w2", until_ms=1500))  # lease live
    assert not board.apply(_event(ev.WORK_DONE, 600, id="a#1", worker="w2", result={}))  # not the holder
    assert board.apply(_event(ev.WORK_RENEWED, 900, id="a#1", worker="w1", until_ms=1900))
    assert board.apply(_event(ev.WORK_CLAIMED, 2000, id="a#1", worker="w2", until_ms=3000))  # expired: taken over
    assert not board.apply(_event(ev.WORK_DONE, 2100, id="a#1", worker="w1", result={"output": 1}))  # w1 lost it
    assert board.apply(_event(ev.WORK_DONE, 2200, id="a#1", worker="w2", result={"output": 2}))
    assert not board.apply(_event(ev.WORK_CLAIMED, 9000, id="a#1", worker="w3", until_ms=9999))  # done stays done
    offer = board.offers["a#1"]
    assert (offer.status, offer.holder, offer.result, offer.claims) == ("done", "w2", {"output": 2}, 2)
    assert board.apply(_event(ev.WORK_OFFERED, 3000, id="b#1", step="b"))
    assert board.apply(_event(ev.WORK_WITHDRAWN, 3001, id="b#1"))
    assert not board.apply(_event(ev.WORK_CLAIMED, 3002, id="b#1", worker="w1", until_ms=4000))
    assert board.claimable(10_000) == []
