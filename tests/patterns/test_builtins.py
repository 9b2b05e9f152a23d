"""Every built-in pattern's example runs offline through the real CLI on a real SQLite file, and
`parallax inspect --json` shows the steps, conflicts and result the pattern promises."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from parallax.cli import cli
from parallax.engine.api import load_run
from parallax.streams.sqlite import SqliteStore
from tests.processes import reap
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    db = tmp_path / "x.db"
    result = CliRunner().invoke(cli, ["--store", f"sqlite://{db}", "run", str(EXAMPLES / name), "--json", *extra])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
    inspected = CliRunner().invoke(cli, ["--store", f"sqlite://{db}", "inspect", run_id, "--json"])
    assert inspected.exit_code == 0, inspected.output
    state: dict[str, Any] = json.loads(inspected.stdout)
    assert state["status"] == "succeeded"
    return state


def steps(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in state["steps"]}


def test_review_revises_until_the_reviewers_approve(tmp_path: Path) -> None:
    state = run_example(tmp_path, "review.yaml")
    by_id = steps(state)
    assert list(by_id) == [
        "writer.r1", "security.r1", "support.r1", "review.r1", "writer.r2", "security.r2", "support.r2", "review.r2"
    ]  # fmt: skip
    assert by_id["review.r1"]["confidence"] == pytest.approx(0.8 / 1.7, abs=1e-3)  # security said no, at 0.9
    assert by_id["review.r1"]["output"]["revise"] is True
    result = state["result"]
    assert result["approved"] is True
    assert result["rounds"] == 2
    assert "Idempotency-Key" in result["draft"]["body"]
    assert by_id["review.r2"]["confidence"] == 1.0  # the reviewers' approval is the draft's confidence
    # the second draft was written with the first round's reviews in its input
    assert by_id["writer.r2"]["role"] == "writer"


def test_consensus_runs_rounds_until_agreement(tmp_path: Path) -> None:
    state = run_example(tmp_path, "consensus.yaml")
    result = state["result"]
    assert result["reached"] is True
    assert result["rounds"] == 2
    assert [h["agreement"] for h in result["history"]] == [pytest.approx(0.6667, abs=1e-3), 1.0]
    # round 1's split is kept as a conflict, round 2 has none
    assert [(c["kind"], c["step"]) for c in state["conflicts"]] == [("disagreement", "vote.r1")]


def test_cascade_escalates_below_the_threshold(tmp_path: Path) -> None:
    state = run_example(tmp_path, "cascade.yaml")
    result = state["result"]
    assert result["accepted"] is True
    assert result["role"] == "strong"
    assert [t["confidence"] for t in result["tried"]] == [0.55, 0.9]
    assert result["answer"]["severity"] == "sev1"


def test_mapreduce_maps_every_item_then_reduces(tmp_path: Path) -> None:
    state = run_example(tmp_path, "mapreduce.yaml")
    by_id = steps(state)
    assert sorted(s for s in by_id if s.startswith("summarise.")) == ["summarise.0", "summarise.1", "summarise.2"]
    assert by_id["notes"]["after"] == ["summarise.0", "summarise.1", "summarise.2"]
    assert state["result"].startswith("## Release notes")


def test_orgchart_escalates_an_unsure_review_to_the_manager(tmp_path: Path) -> None:
    state = run_example(tmp_path, "orgchart.yaml")
    by_id = steps(state)
    workers = sorted(s for s in by_id if s.startswith("engineer."))
    assert workers == ["engineer.1.t1", "engineer.2.t2", "engineer.3.t3"]  # 3 tasks, max 3 instances
    assert by_id["review.2.check.0"]["output"]["escalated_to"] == "director"
    assert by_id["review.2.escalated.1"]["role"] == "director"
    assert by_id["review.2.check.1"]["output"] == {"approved": True, "by": "director", "depth": 1}
    assert state["result"].startswith("Launch checklist")


def test_breakout_runs_a_sub_run_on_its_own_streams(tmp_path: Path) -> None:
    state = run_example(tmp_path, "breakout.yaml")
    estimate = steps(state)["estimate"]
    child = estimate["output"]["run"]
    assert child == f"{state['run_id']}.estimate"
    assert estimate["output"]["result"]["reached"] is True

    async def child_state() -> Any:
        async with SqliteStore(tmp_path / "x.db") as store:
            return await load_run(store, child)

    sub = asyncio.run(child_state())
    assert sub.status == "succeeded"
    assert sub.plan.inputs["question"] == "How long will the migration take, including rehearsals?"


def test_research_cohorts_moderator_and_synthesis(tmp_path: Path) -> None:
    state = run_example(tmp_path, "research.yaml")
    by_id = steps(state)
    turns = [s for s in by_id.values() if s["cohort"]]
    assert {s["cohort"] for s in turns} == {"builders", "operators", "finance"}
    assert len(turns) == 12  # 3 cohorts x 2 agents x 2 rounds (one per phase)
    assert [by_id["round.1"]["output"]["phase"], by_id["decide.1"]["output"]["phase"]] == ["explore", "challenge"]
    assert state["sessions"]["moderator"]["concluded"] is True
    assert state["result"]["summary"].startswith("Not a wholesale move")
    assert 0.0 <= state["divergence"]["divergence"] <= 1.0
    assert set(state["divergence"]["similarity"]) == {"builders|finance", "builders|operators", "finance|operators"}

    async def streams() -> tuple[list[Any], list[Any], list[Any]]:
        async with SqliteStore(tmp_path / "x.db") as store:
            run = state["run_id"]
            return (
                await store.read_all(f"runs/{run}/synthesis"),
                await store.read_all(f"runs/{run}/cohorts/builders"),
                await store.read_all(f"runs/{run}/agents/builders.builder-a.2"),
            )

    synthesis, builders, builder_a2 = asyncio.run(streams())
    assert len(synthesis) == 1
    assert len(builders) == 4  # two members, two rounds, each posted once
    # the moderator's steer reached the builders' next prompt, and nothing of the other cohorts did
    prompt = next(json.loads(r.body)["prompt"] for r in builder_a2 if json.loads(r.body).get("prompt"))
    assert "Who carries the pager" in prompt
    assert "Modular monolith first" in prompt  # its own cohort's transcript
    assert "on-call is four people" not in prompt  # operators' words
    assert "Hosting cost" not in prompt  # finance's words


def test_approval_gate_waits_for_a_person_in_another_process(tmp_path: Path) -> None:
    db = tmp_path / "gate.db"
    store = f"sqlite://{db}"
    base = [sys.executable, "-m", "parallax", "--store", store]
    errors = tmp_path / "run.stderr"
    with errors.open("w") as sink:
        runner = subprocess.Popen(
            [*base, "run", str(EXAMPLES / "approval.yaml"), "--run-id", "announce-1", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:

        def gate_status() -> str | None:
            probe = subprocess.run([*base, "inspect", "announce-1", "--json"], capture_output=True, text=True)
            return steps(json.loads(probe.stdout))["publish-ok"]["status"] if probe.returncode == 0 else None

        wait_until(lambda: gate_status() == "waiting", timeout=120, interval=0.2, what="the gate to wait")
        assert runner.poll() is None  # still waiting for the person
        decided = subprocess.run([*base, "approve", "announce-1", "publish-ok", "--by", "alice"], capture_output=True)
        assert decided.returncode == 0, decided.stderr
        assert runner.wait(timeout=120) == 0, errors.read_text()
    finally:
        reap(runner)
    final = json.loads(
        subprocess.run([*base, "inspect", "announce-1", "--json"], capture_output=True, text=True).stdout
    )
    by_id = steps(final)
    assert by_id["publish-ok"]["output"]["by"] == "alice"
    assert by_id["publish"]["status"] == "succeeded"


def test_a_rejected_gate_stops_what_follows(tmp_path: Path) -> None:
    db = tmp_path / "gate.db"
    base = [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}"]
    runner = subprocess.Popen(
        [*base, "run", str(EXAMPLES / "approval.yaml"), "--run-id", "announce-2", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tried: list[subprocess.CompletedProcess[str]] = []

        def rejected() -> bool:  # refused until the run has reached the gate
            reject = [*base, "approve", "announce-2", "publish-ok", "--reject", "--note", "wrong date"]
            tried.append(subprocess.run(reject, capture_output=True, text=True))
            return tried[-1].returncode == 0

        wait_until(
            rejected, timeout=120, interval=0.2, what=lambda: f"the gate to take a rejection: {tried[-1].stderr}"
        )
        assert runner.wait(timeout=120) == 1
    finally:
        reap(runner)
    final = json.loads(
        subprocess.run([*base, "inspect", "announce-2", "--json"], capture_output=True, text=True).stdout
    )
    by_id = steps(final)
    assert by_id["publish-ok"]["status"] == "failed"
    assert "wrong date" in by_id["publish-ok"]["error"]
    assert by_id["publish"]["status"] == "skipped"
