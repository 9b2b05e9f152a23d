"""Cohorts with a moderator, on real SQLite files: isolation enforced by grants, the moderator's
typed actions (steer, fork, merge, breakout, rewire, stop, phases), and requests refused with
their reasons. The moderator here is a python agent playing a script (a test double at the
agent boundary); the engine, grants and streams are the real ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from parallax.core.state import RunState
from parallax.engine.api import run_plan
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore

PEEK = {"kind": "python", "ref": "tests.engine.agents:peek"}


def pattern(decisions: list[dict[str, Any]], cohorts: dict[str, list[str]], **moderator: Any) -> str:
    doc = {
        "pattern": "cohorts",
        "name": "isolation",
        "inputs": {"question": "q?", "cohorts": list(cohorts), "decisions": decisions},
        "cohorts": {c: {"agents": {a: dict(PEEK) for a in members}} for c, members in cohorts.items()},
        "moderator": {
            "kind": "python",
            "ref": "tests.engine.agents:moderator_script",
            "phases": [{"name": "one"}, {"name": "two"}],
            "rounds_per_phase": 2,
            **moderator,
        },
        "synthesis": {"model": "test"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def run(tmp_path: Path, text: str) -> tuple[RunState, dict[str, list[dict[str, Any]]]]:
    plan = compile_pattern(text, str(tmp_path / "p.yaml"))
    async with SqliteStore(tmp_path / "c.db") as store:
        state = await run_plan(store, plan, run_id="c")
        streams: dict[str, list[dict[str, Any]]] = {}
        for info in await store.list("runs/c/cohorts/"):
            streams[info.name.rsplit("/", 1)[1]] = [json.loads(r.body) for r in await store.read_all(info.name)]
    return state, streams


def seen_by(state: RunState, step: str) -> dict[str, Any]:
    output = state.steps[step].output
    assert isinstance(output, dict), state.steps[step]
    result: dict[str, Any] = json.loads(output["position"])
    return result


def test_a_cohort_cannot_read_another_until_rewired(tmp_path: Path) -> None:
    decisions = [{"actions": [{"action": "rewire", "cohort": "a", "reads": ["b"]}]}]
    state, _ = asyncio.run(run(tmp_path, pattern(decisions, {"a": ["pa"], "b": ["pb"]}, max_rounds=2)))
    assert state.status == "succeeded", {k: v.error for k, v in state.steps.items() if v.error}
    first_a, first_b = seen_by(state, "a.pa.1"), seen_by(state, "b.pb.1")
    assert first_a["own"] == 0
    assert first_a["b"].startswith("denied") and "runs/c/cohorts/b" in first_a["b"]
    assert first_b["a"].startswith("denied")
    second_a, second_b = seen_by(state, "a.pa.2"), seen_by(state, "b.pb.2")
    assert second_a["b"] in (1, 2)  # granted by the rewire: b's round-1 turn (and round 2's, if it was first)
    assert second_a["own"] == 1
    assert second_b["a"].startswith("denied")  # rewiring a did not open a to b
    # the prompts follow the grants too: b's words never reach a's first prompt
    assert "b.pb.1" not in (state.steps["a.pa.1"].output or {}).get("reasoning", "")


def test_moderator_actions_change_the_topology(tmp_path: Path) -> None:
    decisions = [
        {
            "actions": [
                {"action": "steer", "to": "a", "text": "be concrete"},
                {"action": "fork", "stream": "a", "into": "a2"},
                {"action": "breakout", "name": "room", "prompt": "price it", "agents": ["pb"], "reads": ["a"]},
                {"action": "steer", "to": "nobody", "text": "refused"},
            ]
        },
        {"actions": [{"action": "merge", "streams": ["a", "b"], "into": "ab"}, {"action": "stop", "stream": "room"}]},
        {"actions": [{"action": "wrap_up"}]},
    ]
    state, streams = asyncio.run(run(tmp_path, pattern(decisions, {"a": ["pa"], "b": ["pb"]}, max_rounds=8)))
    assert state.status == "succeeded", {k: v.error for k, v in state.steps.items() if v.error}
    session = state.sessions["moderator"]
    log = session["log"]
    assert "moderator round 1: steered a" in log
    assert "moderator round 1: forked a into a2" in log
    assert any("refused" in line and "nobody" in line for line in log)
    assert session["members"]["a2"] == ["pa"]
    assert session["members"]["room"] == ["pb"]
    assert sorted(session["members"]["ab"]) == ["pa", "pb"]
    # the steer reached a's next prompt, and only a's
    assert "be concrete" in state.steps["a.pa.2"].output["reasoning"]
    assert "be concrete" not in state.steps["b.pb.2"].output["reasoning"]
    # fork copied a's stream as it stood (one turn), then a2 went on by itself
    assert streams["a2"][0]["step"] == "a.pa.1"
    assert any(m.get("step", "").startswith("a2.") for m in streams["a2"])
    # the breakout room reads a (granted) and not b
    room = seen_by(state, "room.pb.2")
    assert isinstance(room["a"], int)
    assert room["b"].startswith("denied")
    # the merge interleaved both streams and recorded that their positions differ
    assert {m["step"].split(".")[0] for m in streams["ab"][:4]} == {"a", "b"}
    assert [c.path for c in state.conflicts] == ["cohorts/ab"]
    # after the merge a and b take no turns; after the stop the room takes none; wrap_up ends it
    rounds = {s for s in state.steps if s.startswith(("a.", "b."))}
    assert max(int(s.rsplit(".", 1)[1]) for s in rounds) == 2
    assert not [s for s in state.steps if s.startswith("room.") and int(s.rsplit(".", 1)[1]) > 2]
    assert session["final_round"] == 4
    assert session["concluded"] is True
    assert state.steps["synthesis"].status == "succeeded"


def test_cadence_and_message_limits(tmp_path: Path) -> None:
    text = pattern([], {"a": ["pa"], "b": ["pb"]}, cadence=2, max_messages=3)
    state, streams = asyncio.run(run(tmp_path, text))
    assert state.status == "succeeded"
    moderators = sorted(s for s in state.steps if s.startswith("moderator."))
    assert moderators == ["moderator.2"]  # every second round; the message limit ends it at round 3
    assert [len(streams["a"]), len(streams["b"])] == [3, 3]
    assert "no cohort may take another turn" in " ".join(state.sessions["moderator"]["log"])
