"""The folded stream's contract, once, over every store backend: it never appends on a stale
fold, it decides again after a lost race, and of processes deciding at the same tail exactly
one appends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from parallax.core.events import Event
from parallax.streams import AppendAck, AppendInput, StreamStore
from parallax.streams.folded import EVENTS, FoldedStream, event_record
from tests.nats_fixtures import every_store, nats_server

__all__ = ["every_store", "nats_server"]

ROOT = Path(__file__).resolve().parents[2]


class Numbers:
    """A fold that accepts `n` only as the next number: a claim decided on a stale fold
    (a number someone already took) is refused."""

    def __init__(self, store: StreamStore, stream: str) -> None:
        self.taken: list[int] = []
        self.refused = 0
        self.decisions = 0
        self.folded = FoldedStream(store, stream, self.apply, EVENTS)

    def apply(self, event: Event) -> bool:
        if event.data["n"] != len(self.taken):
            self.refused += 1
            return False
        self.taken.append(event.data["n"])
        return True

    def decide(self) -> list[Event]:
        self.decisions += 1
        return [Event("number", {"n": len(self.taken)})]


async def test_a_conditional_append_on_a_stale_fold_appends_nothing(store: StreamStore) -> None:
    a, b = Numbers(store, "folded/stale"), Numbers(store, "folded/stale")
    await a.folded.sync()
    assert await b.folded.append(b.decide()) is not None  # b takes 0 while a's fold is stale
    stale = await a.folded.append([Event("number", {"n": 0})])
    assert stale is None  # refused by the store, not written
    assert a.taken == [0]  # ... and what moved the tail is folded
    records = await store.read_all("folded/stale")
    assert [r.seq_num for r in records] == [0]
    fresh = await a.folded.append(a.decide())
    assert fresh is not None and fresh.all_accepted and (fresh.start, fresh.end) == (1, 2)
    assert a.taken == [0, 1]


async def test_racing_deciders_redecide_and_never_collide(store: StreamStore) -> None:
    clients = [Numbers(store, "folded/race") for _ in range(6)]
    rounds = 15

    async def work(client: Numbers) -> None:
        for _ in range(rounds):
            appended = await client.folded.decide_and_append(client.decide)
            assert appended is not None and appended.all_accepted

    await asyncio.gather(*(work(c) for c in clients))
    total = len(clients) * rounds
    reader = Numbers(store, "folded/race")
    await reader.folded.sync()
    assert reader.taken == list(range(total))  # contiguous, each number once
    assert reader.refused == 0  # nobody ever appended a decision made on a stale fold
    assert sum(c.decisions for c in clients) >= total


class Interloper:
    """A real store, except that just before the first append it is asked for, another
    writer's record lands at the same position (a race lost at an exact moment)."""

    def __init__(self, store: StreamStore, record: Event) -> None:
        self.store = store
        self.record: Event | None = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, stream: str, input: AppendInput) -> AppendAck:
        if self.record is not None:
            record, self.record = self.record, None
            await self.store.append(stream, AppendInput([event_record(record)]))
        return await self.store.append(stream, input)


async def test_a_lost_race_is_decided_again_on_the_winners_records(store: StreamStore) -> None:
    other = Event("number", {"n": 0, "by": "other"})
    client = Numbers(cast(StreamStore, Interloper(store, other)), "folded/lost")
    appended = await client.folded.decide_and_append(client.decide)
    assert client.decisions == 2  # decided n=0, lost to the other writer, decided n=1
    assert appended is not None and (appended.start, appended.accepted) == (1, (True,))
    bodies = [json.loads(r.body) for r in await store.read_all("folded/lost")]
    assert bodies == [{"n": 0, "by": "other"}, {"n": 1}]


async def test_a_refusing_decision_appends_nothing(store: StreamStore) -> None:
    client = Numbers(store, "folded/refuse")

    def refuse() -> list[Event]:
        raise ValueError("not allowed")

    with pytest.raises(ValueError, match="not allowed"):
        await client.folded.decide_and_append(refuse)
    assert await client.folded.decide_and_append(lambda: None) is None
    assert [info.name for info in await store.list("folded/")] == []  # nothing was ever appended


async def test_an_unconditional_append_learns_whether_the_fold_accepted_it(store: StreamStore) -> None:
    a, b = Numbers(store, "folded/report"), Numbers(store, "folded/report")
    await a.folded.append(a.decide())  # 0
    await b.folded.append([Event("number", {"n": 1})], conditional=False)  # b's fold was stale but 1 is right
    late = await a.folded.append([Event("number", {"n": 1})], conditional=False)  # a repeats 1 after b
    assert late is not None and late.accepted == (False,)
    assert a.taken == [0, 1] and a.refused == 1


def test_exactly_one_process_wins_at_one_tail(tmp_path: Path) -> None:
    db, go = tmp_path / "race.db", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.streams.folded_procs", str(db), "folded/slot", f"p{i}", str(go)],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for i in range(6)
    ]  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        outcomes = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
