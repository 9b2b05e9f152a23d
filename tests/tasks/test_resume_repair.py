"""A run killed in the middle of `git worktree add` resumes (item 17 of the hardening issue).

The kill leaves git's bookkeeping of a half-made worktree locked ("initializing") and the task
claimed by a worker that is gone. `parallax resume` must repair what Parallax created (unlock and
prune its own worktree entries, replace the folder) and carry on to the end: every task merged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.workspaces.test_parallel_coding import init_repo

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}


def parallax(db: Path, repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", *args], cwd=repo,
                          capture_output=True, text=True, timeout=timeout, env=ENV)  # fmt: skip


def locked_worktree(repo: Path, name: str | None = None) -> bool:
    """Whether git has locked a worktree (`name`, or any) it is still checking out."""
    admin = repo / ".git" / "worktrees"
    return admin.is_dir() and any(
        (entry / "locked").exists() for entry in admin.iterdir() if name in (None, entry.name)
    )


def kill_during_worktree_add(tmp_path: Path, files: int, name: str) -> tuple[Path, Path] | None:
    """Start a run and SIGKILL its whole process group the moment git has locked the worktree
    `name` it is still checking out; None if that checkout finished before it was seen."""
    repo = init_repo(tmp_path / f"r{files}", {f"pkg/m{i}.txt": f"{i}\n" for i in range(files)})
    db = tmp_path / f"k{files}.db"
    tasks = {f"t{i}": {"writes": [f"out{i}.txt"], "agent": {"kind": "command", "command": f"echo {i} > out{i}.txt"}}
             for i in range(4)}  # fmt: skip
    pattern = tmp_path / f"k{files}.yaml"
    pattern.write_text(
        yaml.safe_dump({"pattern": "tasks", "name": "killed", "workers": 1, "lease_s": 5, "tasks": tasks})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "run", str(pattern), "--run-id", "k", "-q"],
        cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if locked_worktree(repo, name):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return repo, db
            time.sleep(0.0005)
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# A task's worktree (the first one made), and the integration worktree (made once the first task
# is done: attaching to a half-made one failed every merge, and left it locked).
@pytest.mark.parametrize("name", ["t0", "integration"])
def test_resume_repairs_a_worktree_add_killed_midway(tmp_path: Path, name: str) -> None:
    for files in (3000, 8000, 20000):  # a bigger checkout if the kill came too late
        killed = kill_during_worktree_add(tmp_path, files, name)
        if killed is not None:
            break
    else:
        raise AssertionError("never caught git in the middle of a worktree add")
    repo, db = killed
    assert locked_worktree(repo)  # what the kill left behind
    resumed = parallax(db, repo, "resume", "k")
    board = parallax(db, repo, "tasks", "k", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr + board.stdout
    statuses = {row["task"]: row["status"] for row in json.loads(board.stdout)}
    assert statuses == {f"t{i}": "merged" for i in range(4)}
    assert not locked_worktree(repo)
