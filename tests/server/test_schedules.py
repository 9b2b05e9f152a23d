"""Schedules on a real SQLite store: cron firing, persistence across a server restart, the
missed-run policy, and two schedulers sharing a store never firing one due time twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient

from parallax.server.app import create_app
from parallax.server.scheduler import Schedule, Scheduler
from parallax.streams.sqlite import SqliteStore
from tests.waiting import wait_until

TOKEN = "schedule-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PATTERN = "pattern: fanout\nname: tick\nagents:\n  a: {kind: command, command: 'echo ok'}\n"


def wait_for(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    return wait_until(check, timeout=timeout, interval=0.1, what="the scheduler")


def test_a_schedule_fires_and_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    with TestClient(create_app(url, TOKEN, schedule_interval_s=0.2)) as client:
        bad = client.post("/schedules", json={"id": "x", "cron": "every minute", "pattern": PATTERN}, headers=ADMIN)
        assert bad.status_code == 400 and "not a cron expression" in bad.text
        made = client.post("/schedules", json={"id": "tick", "cron": "* * * * * *", "pattern": PATTERN}, headers=ADMIN)
        assert made.status_code == 201, made.text
        fired = wait_for(lambda: client.get("/schedules", headers=ADMIN).json()["schedules"][0]["runs"])
        run = wait_for(lambda: client.get(f"/runs/{fired[0]}", headers=ADMIN).json()["status"] == "succeeded")
        assert run
    # a new server process on the same store still has the schedule, and keeps firing
    with TestClient(create_app(url, TOKEN, schedule_interval_s=0.2)) as client:
        before = len(client.get("/schedules", headers=ADMIN).json()["schedules"][0]["runs"])
        wait_for(lambda: len(client.get("/schedules", headers=ADMIN).json()["schedules"][0]["runs"]) > before)
        assert client.delete("/schedules/tick", headers=ADMIN).status_code == 200
        assert client.get("/schedules", headers=ADMIN).json()["schedules"] == []


async def _missed(tmp_path: Path, policy: str) -> list[str]:
    started: list[str] = []

    async def start(schedule: Schedule, run_id: str) -> str:
        started.append(run_id)
        return run_id

    async with SqliteStore(tmp_path / f"{policy}.db") as store:
        scheduler = Scheduler(store, start)
        await scheduler.create("daily", "0 3 * * *", policy, pattern=PATTERN, target=None, inputs={})
        created = scheduler.schedules["daily"].created_ms
        # the server was down for three days: three 03:00s were missed
        await scheduler.tick(created + 3 * 86_400_000 + 60_000)
        await scheduler.tick(created + 3 * 86_400_000 + 120_000)  # and nothing more until the next one
    return started


def test_missed_runs_skip_or_run_once(tmp_path: Path) -> None:
    assert asyncio.run(_missed(tmp_path, "skip")) == []
    once = asyncio.run(_missed(tmp_path, "once"))
    assert len(once) == 1 and once[0].startswith("daily-")


def test_two_schedulers_on_one_store_fire_once(tmp_path: Path) -> None:
    async def main() -> list[str]:
        started: list[str] = []

        async def start(schedule: Schedule, run_id: str) -> str:
            started.append(run_id)
            return run_id

        async with SqliteStore(tmp_path / "two.db") as store:
            one, two = Scheduler(store, start), Scheduler(store, start)
            await one.create("tick", "* * * * * *", "once", pattern=PATTERN, target=None, inputs={})
            now = one.schedules["tick"].created_ms + 1500
            await two.sync()
            await asyncio.gather(one.tick(now), two.tick(now))
        return started

    started = asyncio.run(main())
    assert len(started) == 1
