"""parallax run / runs / inspect / compile / resume / fork / cancel / approve, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from parallax.cli import cli
from tests.processes import reap
from tests.waiting import wait_until

TARGET = """
from parallax.core.plan import AgentSpec, GateSpec, MergeSpec, Plan, Step

def agent(step_id, fn, *after):
    return Step(id=step_id, kind="agent", after=after, agent=AgentSpec(kind="python", ref=f"tests.engine.agents:{fn}"),
                output="tests.engine.agents:View" if fn == "view" else None)

def build(dir, gate="no"):
    views = {"a": {"rate_limit": 10}, "b": {"rate_limit": 60}}
    steps = [agent("a", "view"), agent("b", "view"),
             Step(id="merge", kind="merge", after=("a", "b"), merge=MergeSpec(ignore=("agent",)))]
    if gate == "yes":
        steps.append(Step(id="review", kind="gate", after=("merge",), gate=GateSpec(kind="approval")))
    return Plan(name="cli-test", steps=tuple(steps), inputs={"dir": dir, "views": views})

def not_a_plan():
    return 42
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "target.py").write_text(TARGET)
    monkeypatch.setenv("PARALLAX_STORE", f"sqlite://{tmp_path / 'cli.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def px(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_inspect_runs(env: Path) -> None:
    result = px("run", "target.py:build", "--input", f"dir={env}", "--json", "-o", "result.json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["status"] == "succeeded"
    assert [c["path"] for c in run["conflicts"]] == ["rate_limit"]
    assert json.loads((env / "result.json").read_text())["document"]["a"]["rate_limit"] == 10
    inspected = px("inspect", run["run_id"])
    assert "1 conflict," in inspected.output and "disagreement at rate_limit" in inspected.output
    listed = px("runs")
    assert run["run_id"] in listed.output and "succeeded" in listed.output


def test_compile_is_deterministic(env: Path) -> None:
    one = px("compile", "target.py:build", "--input", "dir=/x", "--json")
    two = px("compile", "target.py:build", "--input", "dir=/x", "--json")
    assert one.exit_code == 0 and one.output == two.output
    readable = px("compile", "target.py:build", "--input", "dir=/x")
    assert "merge" in readable.output and "after a, b" in readable.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py:build"], "no such file 'missing.py'"),
        (["run", "target.py:nope"], "has no attribute 'nope'"),
        (["run", "target.py:not_a_plan"], "returned int, not a Plan"),
        (["run", "target.py:build", "--input", "color=red"], "takes no input named color"),
        (["run", "target.py:build", "--input", "novalue"], "expected KEY=VALUE"),
        (["inspect", "no-such-run"], "run not found: 'no-such-run'"),
        (["compile", "nothing-here"], "expected pattern.yaml, file.py"),
    ],
)
def test_bad_targets_are_one_clear_line(env: Path, args: list[str], message: str) -> None:
    result = px(*args)
    assert result.exit_code == 2 if "run not found" not in message else result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_approve_from_another_process_then_fork(env: Path) -> None:
    exe = [sys.executable, "-m", "parallax"]
    proc = subprocess.Popen(
        [
            *exe,
            "run",
            "target.py:build",
            "--input",
            f"dir={env}",
            "--input",
            "gate=yes",
            "--quiet",
            "--run-id",
            "gated",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:

        def waiting() -> bool:
            out = px("inspect", "gated", "--json")
            return out.exit_code == 0 and any(s["status"] == "waiting" for s in json.loads(out.output)["steps"])

        wait_until(waiting, timeout=120, what="the gate to wait for a person")
        approved = px("approve", "gated", "review", "--note", "looks right", "--by", "ana")
        assert approved.exit_code == 0, approved.output
        _, stderr = proc.communicate(timeout=120)
    finally:
        reap(proc)
    assert proc.returncode == 0, stderr
    state = json.loads(px("inspect", "gated", "--json").output)
    assert state["status"] == "succeeded"
    review = next(s for s in state["steps"] if s["id"] == "review")
    assert review["output"] == {"approved": True, "by": "ana", "note": "looks right"}

    forked = px("fork", "gated", "--at", "2", "--run-id", "gated-fork", "--no-run")
    assert forked.exit_code == 0, forked.output
    assert forked.stdout.strip() == "gated-fork"
    assert json.loads(px("inspect", "gated-fork", "--json").output)["forked_from"] == ["gated", 2]
