"""Task graphs from other processes: the review queue (a person rejects with a note, the agent
runs again with it, then approves), an extra `parallax worker`, and `parallax apply`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.processes import reap
from tests.waiting import wait_until
from tests.workspaces.test_parallel_coding import init_repo, sh

ROOT = Path(__file__).resolve().parents[2]


def cli(db: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", *args], cwd=repo,
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip


def start(tmp_path: Path, repo: Path, db: Path, doc: dict[str, Any], run_id: str) -> subprocess.Popen[bytes]:
    pattern = tmp_path / f"{run_id}.yaml"
    pattern.write_text(yaml.safe_dump(doc))
    with (tmp_path / f"{run_id}.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "run", str(pattern), "--run-id", run_id, "-q"],
            cwd=repo, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def board(db: Path, repo: Path, run_id: str) -> dict[str, dict[str, Any]]:
    result = cli(db, repo, "tasks", run_id, "--json")
    return {row["task"]: row for row in json.loads(result.stdout)} if result.returncode == 0 else {}


def wait(predicate: Any, timeout: float = 120) -> None:
    wait_until(predicate, timeout=timeout, interval=0.2, what="the task board")


def test_review_queue_reject_with_a_note_then_approve(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    db = tmp_path / "q.db"
    doc = {
        "pattern": "tasks", "name": "queue", "workers": 1, "review_queue": True,
        "tasks": {"style": {"prompt": "Write the style guide.", "writes": ["style.txt"],
                            "agent": {"kind": "command", "command": "printf '%s\\n' {{prompt}} > style.txt"}}},
    }  # fmt: skip
    runner = start(tmp_path, repo, db, doc, "q")
    try:
        wait(lambda: board(db, repo, "q").get("style", {}).get("status") == "succeeded")
        shown = cli(db, repo, "review", "q")
        assert shown.returncode == 0, shown.stderr
        assert "task style: succeeded, attempt 1" in shown.stdout
        assert "+Write the style guide." in shown.stdout  # the diff
        rejected = cli(db, repo, "review", "q", "--reject", "--note", "use tabs", "--by", "alice")
        assert rejected.returncode == 0, rejected.stderr
        assert "sent style back" in rejected.stdout
        wait(
            lambda: (
                board(db, repo, "q")["style"]["attempt"] == 2 and board(db, repo, "q")["style"]["status"] == "succeeded"
            )
        )
        approved = cli(db, repo, "review", "q", "--approve", "--by", "bob")
        assert approved.returncode == 0, approved.stderr
        assert runner.wait(timeout=120) == 0, (tmp_path / "q.err").read_text()
    finally:
        reap(runner)
    text = sh(repo, "git", "show", "parallax/q/integration:style.txt")
    assert "This task was sent back: alice: use tabs" in text
    assert cli(db, repo, "review", "q").stdout.strip() == "nothing is waiting for review"
    # apply brings it into the user's branch, only now
    assert not (repo / "style.txt").exists()
    applied = cli(db, repo, "apply", "q")
    assert applied.returncode == 0, applied.stderr
    assert (repo / "style.txt").read_text() == text


def test_a_worker_in_another_process_shares_the_graph(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    db = tmp_path / "w.db"
    tasks = {f"t{i}": {"writes": [f"out{i}.txt"], "agent": {"kind": "command", "command": f"sleep 0.6; echo {i} > out{i}.txt"}}
             for i in range(6)}  # fmt: skip
    runner = start(tmp_path, repo, db, {"pattern": "tasks", "name": "shared", "workers": 1, "tasks": tasks}, "w")
    try:
        wait(lambda: any(t["status"] in ("claimed", "running") for t in board(db, repo, "w").values()))
        helper = cli(db, repo, "worker", "w", "--workers", "2")
        assert helper.returncode == 0, helper.stderr
        assert runner.wait(timeout=120) == 0, (tmp_path / "w.err").read_text()
    finally:
        reap(runner)
    final = board(db, repo, "w")
    assert {t["status"] for t in final.values()} == {"merged"}
    ran_by_helper = int(helper.stdout.split()[1])
    assert ran_by_helper >= 1
    assert sorted(sh(repo, "git", "ls-tree", "--name-only", "parallax/w/integration").split()) == sorted(
        ["a.txt", *(f"out{i}.txt" for i in range(6))]
    )


def test_bad_requests_are_clear(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    db = tmp_path / "b.db"
    unknown = cli(db, repo, "tasks", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "error: run not found: 'nope'\n"
    both = cli(db, repo, "review", "nope", "--approve", "--reject")
    assert both.returncode == 2
    assert "--approve or --reject, not both" in both.stderr
