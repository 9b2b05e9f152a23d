"""Control steps at their edges: limits reached, nothing good enough, bad lists, escalation all
the way to a person. Agents are python functions playing scripted answers (test doubles at the
agent boundary); the controllers, engine and store are the real ones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from parallax.core.divergence import divergence
from parallax.core.state import RunState
from parallax.engine.api import create_run, decide_gate, load_run
from parallax.engine.runner import Runner
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore
from tests.waiting import async_wait_until

ANSWER = {"kind": "python", "ref": "tests.engine.agents:answer"}


def run(tmp_path: Path, doc: dict[str, Any], answers: dict[str, Any]) -> RunState:
    doc = {"name": "t", **doc, "inputs": {**doc.get("inputs", {}), "answers": answers}}
    plan = compile_pattern(yaml.safe_dump(doc), str(tmp_path / "p.yaml"))

    async def go() -> RunState:
        async with SqliteStore(tmp_path / "t.db") as store:
            run_id = await create_run(store, plan, run_id="t")
            return await Runner(store, run_id).run()

    return asyncio.run(go())


def test_consensus_that_never_agrees_stops_at_the_round_limit(tmp_path: Path) -> None:
    doc = {"pattern": "consensus", "consensus": {"field": "v", "threshold": 0.9, "max_rounds": 2},
           "agents": {"x": ANSWER, "y": ANSWER}}  # fmt: skip
    state = run(tmp_path, doc, {"x": {"v": 1}, "y": {"v": 2}})
    assert state.status == "succeeded"
    assert state.result["reached"] is False
    assert state.result["rounds"] == 2
    assert state.result["winner"] is None  # a tie has no winner
    assert sorted(s for s in state.steps if s.startswith("consensus.")) == ["consensus.r1", "consensus.r2"]


def test_cascade_with_no_confident_tier_returns_the_best_not_accepted(tmp_path: Path) -> None:
    doc = {"pattern": "cascade", "cascade": {"threshold": 0.9},
           "agents": {"a": ANSWER, "b": ANSWER, "c": ANSWER}}  # fmt: skip
    answers = {"a": {"x": 1, "confidence": 0.5}, "b": {"x": 2, "confidence": 0.7}, "c": {"x": 3, "confidence": 0.6}}
    state = run(tmp_path, doc, answers)
    assert state.result["accepted"] is False
    assert state.result["role"] == "b"
    assert [t["role"] for t in state.result["tried"]] == ["a", "b", "c"]


def test_cascade_where_every_tier_fails_fails(tmp_path: Path) -> None:
    doc = {"pattern": "cascade", "cascade": {"threshold": 0.9}, "agents": {"a": ANSWER, "b": ANSWER}}
    state = run(tmp_path, doc, {})
    assert state.status == "failed"
    assert "no tier of the cascade produced an answer" in (state.steps["cascade.2"].error or "")


def test_map_over_something_that_is_not_a_list_fails_clearly(tmp_path: Path) -> None:
    doc = {"pattern": "mapreduce", "inputs": {"items": "abc"}, "map": {"over": "input.items", "agent": "m"},
           "agents": {"m": ANSWER}}  # fmt: skip
    state = run(tmp_path, doc, {"m": 1})
    assert state.status == "failed"
    assert state.steps["split"].error == "map over input.items: expected a list, found str"


def test_map_over_an_upstream_output_and_an_empty_list(tmp_path: Path) -> None:
    doc = {"pattern": "mapreduce", "map": {"over": "steps.list.output.files", "agent": "m", "reduce": "r"},
           "agents": {"list": ANSWER, "m": ANSWER, "r": ANSWER}}  # fmt: skip
    state = run(tmp_path, doc, {"list": {"files": ["a.py", "b.py"]}, "m.0": "A", "m.1": "B", "r": "AB"})
    assert state.status == "succeeded"
    assert state.plan is not None and state.plan.step("m.1").input["item"] == "b.py"
    assert state.result == "AB"
    (tmp_path / "empty").mkdir()
    empty = run(tmp_path / "empty", doc, {"list": {"files": []}, "r": "nothing"})
    assert empty.status == "succeeded"
    assert empty.result == "nothing"


def test_review_not_approved_after_the_last_round(tmp_path: Path) -> None:
    doc = {"pattern": "review", "review": {"max_rounds": 2, "approve_at": 0.6},
           "agents": {"w": ANSWER, "r1": ANSWER}}  # fmt: skip
    state = run(tmp_path, doc, {"w": "draft", "r1": {"approve": False, "confidence": 0.9, "comments": ["no"]}})
    assert state.result["approved"] is False
    assert state.result["rounds"] == 2
    assert state.steps["review.r2"].confidence == 0.0


def test_escalation_past_the_depth_limit_goes_to_a_person(tmp_path: Path) -> None:
    doc = {
        "pattern": "orgchart",
        "roles": {"boss": ANSWER, "dev": {**ANSWER, "reports_to": "boss"}},
        "escalation": {"below": 0.8, "max_depth": 0},
        "workflow": [{"parallel": {"role": "dev"}}, {"review": {"by": "dev"}}, {"aggregate": {"by": "boss"}}],
    }
    answers = {
        "dev.1": "work",
        "review.2": {"approve": False, "confidence": 0.9, "comments": ["unsure"]},
        "aggregate.3": "done",
    }
    doc = {"name": "t", **doc, "inputs": {"answers": answers}}
    plan = compile_pattern(yaml.safe_dump(doc), str(tmp_path / "p.yaml"))

    async def go() -> RunState:
        async with SqliteStore(tmp_path / "t.db") as store:
            await create_run(store, plan, run_id="t")
            task = asyncio.create_task(Runner(store, "t").run())

            async def escalated() -> RunState | None:
                state = await load_run(store, "t")
                user = state.steps.get("review.2.user")
                return state if user is not None and user.status == "waiting" else None

            state = await async_wait_until(escalated, timeout=60, interval=0.02, what="the escalation to the user")
            assert state.steps["review.2.check.0"].output["escalated_to"] == "user"
            await decide_gate(store, "t", "review.2.user", approved=True, by="cto", note="ship it")
            return await task

    state = asyncio.run(go())
    assert state.status == "succeeded"
    assert state.result == "done"


def test_divergence_is_bounded_and_keeps_the_lexical_figure_beside_it() -> None:
    same = divergence({"a": "use postgres with read replicas", "b": "use postgres with read replicas"})
    apart = divergence({"a": "use postgres with read replicas", "b": "shard everything into dynamodb tables"})
    assert same["divergence"] == 0.0
    assert 0.0 <= apart["divergence"] <= 1.0
    assert apart["measures"]["jaccard-content-words"]["a|b"] == 0.0  # the old, lexical figure
    assert divergence({"a": "alone"})["divergence"] is None
    partial = divergence({"a": "postgres replicas", "b": "postgres shards"})["measures"]["jaccard-content-words"]
    assert partial["a|b"] == round(1 / 3, 4)
