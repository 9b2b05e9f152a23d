"""A live cohorts run in one process, changed and joined from others: `parallax topology`,
`parallax message` and `parallax join` (a person typing, and an external agent CLI, here a
stand-in executable named claude). The run applies what they append, and the cohorts stay
isolated from each other throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.agents.test_cli_agents import install_fake
from tests.processes import reap
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def write_pattern(folder: Path, phases: int = 5) -> Path:
    """A run of `phases` x 100 rounds of 0.4 s at least: longer than a test lets it go on (each
    concludes it), however slowly a loaded machine runs the test's commands meanwhile."""
    doc = {
        "pattern": "cohorts",
        "name": "live",
        "inputs": {"question": "q?", "cohorts": ["a", "b"], "sleep": 0.4},
        "cohorts": {
            "a": {"agents": {"pa": {"kind": "python", "ref": "tests.engine.agents:peek"}}},
            "b": {"agents": {"pb": {"kind": "python", "ref": "tests.engine.agents:peek"}}},
        },
        "moderator": {
            "kind": "python",
            "ref": "tests.engine.agents:moderator_script",
            "phases": [{"name": f"part{n}"} for n in range(1, phases + 1)],
            "rounds_per_phase": 100,
        },
        "synthesis": {"model": "test"},
    }
    path = folder / "live.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def parallax(db: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


def inspect(db: Path, run_id: str) -> dict[str, Any]:
    probe = parallax(db, "inspect", run_id, "--json")
    return json.loads(probe.stdout) if probe.returncode == 0 else {}


def wait_for(
    db: Path, run_id: str, predicate: Any, runner: subprocess.Popen[bytes], timeout: float = 120
) -> dict[str, Any]:
    """The run's state once `predicate` holds, while `runner` (started by start_run) runs it."""

    def ready() -> dict[str, Any] | None:
        if runner.poll() is not None:
            raise AssertionError(f"the run process exited with {runner.returncode}: {stderr_of(db, run_id)}")
        state = inspect(db, run_id)
        return state if state and predicate(state) else None

    return wait_until(ready, timeout=timeout, interval=0.1, what=lambda: f"run {run_id}: {inspect(db, run_id)}")


def turns(state: dict[str, Any], cohort: str) -> list[dict[str, Any]]:
    return [s for s in state["steps"] if s["cohort"] == cohort]


def stderr_of(db: Path, run_id: str) -> str:
    return (db.parent / f"{run_id}.stderr").read_text()


def start_run(tmp_path: Path, db: Path, run_id: str) -> subprocess.Popen[bytes]:
    assert db.parent == tmp_path  # where stderr_of finds what it printed
    with (tmp_path / f"{run_id}.stderr").open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "run", str(write_pattern(tmp_path)),
             "--run-id", run_id, "--quiet"],
            stdout=subprocess.DEVNULL, stderr=sink, cwd=ROOT,
        )  # fmt: skip


def test_topology_messages_and_a_person_joining_from_other_processes(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    runner = start_run(tmp_path, db, "L")
    try:
        wait_for(db, "L", lambda s: any(t["status"] == "succeeded" for t in turns(s, "b")), runner)
        stopped = parallax(db, "topology", "L", "stop", "b", "--by", "ops", "--wait", "120")
        assert stopped.returncode == 0, stopped.stderr
        assert "applied: stopped b" in stopped.stdout
        b_turns_when_stopped = len(turns(inspect(db, "L"), "b"))

        sent = parallax(db, "message", "L", "--to", "a", "look at the pager rota")
        assert sent.returncode == 0, sent.stderr
        joined = subprocess.Popen(
            [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "join", "L", "--cohort", "a", "--as", "dana"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            assert joined.stdin is not None
            joined.stdin.write("dana says: count the on-call load\n")
            joined.stdin.flush()

            def a_heard_everything(state: dict[str, Any]) -> bool:
                reasons = [(t["output"] or {}).get("reasoning", "") for t in turns(state, "a")]
                return any("look at the pager rota" in r and "dana says" in r for r in reasons)

            wait_for(db, "L", a_heard_everything, runner)
            seen_by_dana, dana_errors = joined.communicate(timeout=120)  # closes her stdin: dana leaves (Ctrl-D)
            assert joined.returncode == 0, dana_errors
        finally:
            reap(joined)

        bad = parallax(db, "topology", "L", "stop", "nosuch")
        assert bad.returncode == 2
        assert "no cohort 'nosuch'" in bad.stderr
        bad = parallax(db, "message", "L", "--to", "nobody", "hi")
        assert bad.returncode == 2
        assert "no cohort or agent 'nobody'" in bad.stderr

        concluded = parallax(db, "topology", "L", "conclude", "--wait", "120")
        assert concluded.returncode == 0, concluded.stderr
        assert "applied: concluding" in concluded.stdout
        assert runner.wait(timeout=120) == 0, (tmp_path / "L.stderr").read_text()
    finally:
        reap(runner)

    final = inspect(db, "L")
    assert final["status"] == "succeeded"
    assert len(turns(final, "b")) <= b_turns_when_stopped + 1  # a round already under way may finish
    assert [r["outcome"] for r in final["requests"]] == ["stopped b", "concluding"]
    assert final["requests"][0]["by"] == "user:ops"
    # b never saw what was said to a, nor what dana typed into a
    for turn in turns(final, "b"):
        reasoning = (turn["output"] or {}).get("reasoning", "")
        assert "dana says" not in reasoning
        assert "pager rota" not in reasoning
    # dana saw cohort a's stream (pa's turns and her own line) and nothing of b
    assert '"from": "pa"' not in seen_by_dana  # printed as transcript lines, not JSON
    assert "pa, round 1" in seen_by_dana
    assert "human:dana" in seen_by_dana
    assert "pb" not in seen_by_dana
    # once the run is over, it takes no more changes
    late = parallax(db, "topology", "L", "stop", "a")
    assert late.returncode == 2
    assert "already finished" in late.stderr


def test_an_external_agent_cli_joins_a_cohort(tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "claude",
        [{"type": "result", "subtype": "success", "is_error": False, "result": "External view: ship it in two steps."}],
    )
    db = tmp_path / "agent.db"
    runner = start_run(tmp_path, db, "X")
    try:
        wait_for(db, "X", lambda s: any(t["status"] == "succeeded" for t in turns(s, "a")), runner)
        grants = [arg for name in ("FAKE_OUTPUT_FILE", "FAKE_ARGV_FILE", "FAKE_EXIT") for arg in ("--env", name)]
        agent = parallax(db, "join", "X", "--cohort", "a", "--agent", "claude", "--max-turns", "1", *grants,
                         env={**env, "HOME": str(tmp_path)}, timeout=120)  # fmt: skip
        assert agent.returncode == 0, agent.stderr
        assert "[agent:claude] External view: ship it in two steps." in agent.stdout

        def a_heard_the_agent(state: dict[str, Any]) -> bool:
            return any("External view" in (t["output"] or {}).get("reasoning", "") for t in turns(state, "a"))

        wait_for(db, "X", a_heard_the_agent, runner)
        assert parallax(db, "topology", "X", "conclude").returncode == 0
        assert runner.wait(timeout=120) == 0, (tmp_path / "X.stderr").read_text()
    finally:
        reap(runner)
    argv = json.loads((tmp_path / "claude.argv").read_text())
    prompt = argv[argv.index("--") + 1]  # options first, then the prompt
    assert "cohort 'a'" in prompt
    assert "pa, round 1" in prompt  # it read a's transcript
    assert "pb" not in prompt  # and nothing of b
