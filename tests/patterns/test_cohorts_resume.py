"""Cohorts with a moderator survive crashes: SIGKILL the coordinator at random moments (in the
middle of a turn, and after a few more steps finished), resume from the log each time, and the
run ends exactly as an uninterrupted one does: the same steps (the graph grown by the same
decisions), the same moderator session (phase, rounds, active cohorts, counters), the same
synthesis, and every turn posted to its cohort stream once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from parallax.core.errors import StreamNotFound
from parallax.core.state import describe
from parallax.engine.api import load_run
from parallax.streams.sqlite import SqliteStore
from tests.processes import reap

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("PARALLAX_CRASH_SEED", "20261123"))


def deterministic_research(folder: Path) -> Path:
    """examples/research.yaml with answers keyed by step id (so a resumed process answers each
    step exactly as the first one would have), streamed slowly enough to be killed mid-turn."""
    answers = json.loads((ROOT / "examples" / "research.answers.json").read_text())
    cohorts = {"builders": ["builder-a", "builder-b"], "operators": ["operator-a", "operator-b"],
               "finance": ["finance-a", "finance-b"]}  # fmt: skip
    keyed: dict[str, Any] = {"_settings": {"chunk_delay_s": 0.004}}
    for cohort, members in cohorts.items():
        for member in members:
            for n, answer in enumerate(answers[member], start=1):
                keyed[f"{cohort}.{member}.{n}"] = [answer]
    for n, answer in enumerate(answers["moderator"], start=1):
        keyed[f"moderator.{n}"] = [answer]
    keyed["synthesis"] = answers["synthesis"]
    (folder / "answers.json").write_text(json.dumps(keyed))
    text = (ROOT / "examples" / "research.yaml").read_text().replace("research.answers.json", "answers.json")
    (folder / "research.yaml").write_text(text)
    return folder / "research.yaml"


def parallax(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", *args]


async def progress(db: Path, run_id: str) -> Counter[bytes]:
    """How many records of each type the run's log holds: step.output counts progress, however
    many retries it took; step.started, turns begun."""
    if not db.exists():
        return Counter()
    async with SqliteStore(db) as store:
        try:
            records = await store.read_all(f"runs/{run_id}/control")
        except StreamNotFound:
            return Counter()
    return Counter(dict(r.headers).get(b"type", b"") for r in records)


async def final_view(db: Path, run_id: str) -> dict[str, Any]:
    async with SqliteStore(db) as store:
        state = await load_run(store, run_id)
        view = describe(state)
        posts: dict[str, list[str]] = {}
        for info in await store.list(f"runs/{run_id}/cohorts/"):
            records = await store.read_all(info.name)
            posts[info.name.rsplit("/", 1)[1]] = [
                dict(r.headers).get(b"idem", b"").decode().rsplit("/", 1)[-1] for r in records
            ]
        synthesis = sum(1 for i in await store.list(f"runs/{run_id}/synthesis") if i.name.endswith("synthesis"))
        if synthesis:
            synthesis = len(await store.read_all(f"runs/{run_id}/synthesis"))
    steps = {s["id"]: (s["status"], s["after"], s["output"]) for s in view["steps"]}
    return {
        "status": view["status"],
        "steps": steps,
        "sessions": view["sessions"],
        "divergence": view["divergence"],
        "result": view["result"],
        "posts": posts,
        "synthesis_records": synthesis,
    }


def test_moderator_resumes_mid_run_with_the_same_state(tmp_path: Path) -> None:
    pattern = deterministic_research(tmp_path)
    reference_db = tmp_path / "reference.db"
    done = subprocess.run(parallax(reference_db, "run", str(pattern), "--run-id", "r", "--quiet"), capture_output=True)
    assert done.returncode == 0, done.stderr
    reference = asyncio.run(final_view(reference_db, "r"))

    rng = random.Random(SEED)
    db = tmp_path / "crash.db"
    kills = 0  # that landed mid-run: the process was running and the run unfinished after it
    command = parallax(db, "run", str(pattern), "--run-id", "r", "--quiet")
    for attempt in range(80):
        at_start = asyncio.run(progress(db, "r"))
        if attempt % 2 == 0:  # in the middle of a turn: once this process has started one
            kind, target = b"step.started", at_start[b"step.started"] + 1
        else:  # after a few more steps finished: every other process moves the run on, so it ends
            kind, target = b"step.output", at_start[b"step.output"] + rng.randint(1, 4)
        stderr = tmp_path / f"process{attempt}.stderr"
        with stderr.open("w") as sink:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
        try:
            deadline = time.monotonic() + 120  # a deadline: it only matters if the process hangs
            while process.poll() is None and time.monotonic() < deadline:
                if asyncio.run(progress(db, "r"))[kind] >= target:
                    time.sleep(rng.uniform(0, 0.03))  # the scenario: a random moment from there
                    break
                time.sleep(0.005)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            returncode = process.wait(timeout=60)
            assert returncode in (0, -signal.SIGKILL), stderr.read_text()  # killed, or ended by itself
        finally:
            reap(process)
        state = asyncio.run(final_view(db, "r"))
        if returncode == -signal.SIGKILL and state["status"] != "succeeded":
            kills += 1
        if state["status"] == "succeeded":
            break
        command = parallax(db, "resume", "r", "--quiet")
    crashed = asyncio.run(final_view(db, "r"))
    assert kills >= 5, f"only {kills} kills landed mid-run"
    assert crashed["status"] == "succeeded"
    assert crashed["steps"] == reference["steps"]
    assert crashed["sessions"] == reference["sessions"]
    assert crashed["divergence"] == reference["divergence"]
    assert crashed["result"] == reference["result"]
    assert crashed["synthesis_records"] == 1
    for cohort, posted in crashed["posts"].items():
        assert Counter(posted) == Counter(reference["posts"][cohort]), cohort  # each turn posted exactly once
        assert len(set(posted)) == len(posted)
