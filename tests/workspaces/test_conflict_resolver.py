"""Conflicts at integration and the graph's resolver, end to end on real git repositories with
command agents as scripted coders and resolvers.

The engine avoids conflicts by design (two tasks whose write sets overlap never run at once,
and the later one starts from the earlier one's commit), so these tests force one: the two
tasks do not stack (`write_sets_overlap` as the handoff sees it says no), both start from the
same commit and change the same line of config.txt, and merging the second conflicts. That is
what a commit made on the integration branch meanwhile, or a clash the write sets cannot see,
looks like to `integrate()`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from parallax.core.state import RunState
from parallax.core.tasks import TaskBoard
from parallax.engine import tasks as engine_tasks
from parallax.engine.api import create_run
from parallax.engine.integration import decide_review, task_diff, task_graph_of, verify_output
from parallax.engine.runner import Runner, RunOptions
from parallax.engine.taskboard import TaskClient
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore
from tests.workspaces.test_parallel_coding import _control, init_repo, run_tasks, sh

BASE = "name = demo\nmode = base\n"
RESOLVED = "name = demo\nmode = fast+safe\n"


@pytest.fixture(autouse=True)
def tasks_do_not_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_tasks, "write_sets_overlap", lambda *args, **kwargs: False)


def graph(resolver: str | None, *, review: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pattern": "tasks",
        "name": "conflict",
        "workers": 1,
        "verify": "grep -q fast config.txt && grep -q safe config.txt",
        "review_queue": review,
        "tasks": {
            "a": {"prompt": "Make the mode fast.", "writes": ["config.txt"],
                  "agent": {"kind": "command", "command": "printf 'name = demo\\nmode = fast\\n' > config.txt"}},
            "b": {"prompt": "Make the mode safe.", "writes": ["config.txt"],
                  "agent": {"kind": "command", "command": "printf 'name = demo\\nmode = safe\\n' > config.txt"}},
        },
    }  # fmt: skip
    if resolver is not None:
        doc["resolver"] = {"agent": {"kind": "command", "command": resolver}}
    return doc


# Keeps what it was told (in its own TMPDIR, outside the worktree), then writes both intents.
RESOLVE = "printf '%s' {{ prompt }} > \"$TMPDIR/prompt.txt\"; printf 'name = demo\\nmode = fast+safe\\n' > config.txt"


def test_a_conflict_is_resolved_verified_and_merged_by_the_resolver(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"config.txt": BASE})
    state = run_tasks(tmp_path, repo, graph(RESOLVE))
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sh(repo, "git", "show", "parallax/t/integration:config.txt") == RESOLVED
    assert state.tasks is not None
    board = state.tasks.tasks
    assert (board["a"].status, board["b"].status) == ("merged", "merged")
    resolution = board["b"].resolution
    assert resolution is not None
    assert (resolution.status, resolution.files, resolution.against) == ("resolved", ("config.txt",), ("a",))
    assert resolution.branch == "parallax/t/resolve-b"
    # The resolution is a merge of b (both parents) on its own branch; integration fast-forwarded to it.
    head = sh(repo, "git", "rev-parse", "parallax/t/integration").strip()
    assert head == sh(repo, "git", "rev-parse", "parallax/t/resolve-b").strip() == resolution.commit
    parents = sh(repo, "git", "rev-list", "--parents", "-n", "1", head).split()[1:]
    assert sh(repo, "git", "rev-parse", "parallax/t/b").strip() in parents
    assert board["b"].commit == head
    # The resolver saw both intents, both diffs and the conflicted file.
    prompt = (repo / ".parallax" / "runs" / "t" / "tmp" / "resolve-b" / "prompt.txt").read_text()
    assert "Make the mode fast." in prompt and "Make the mode safe." in prompt
    assert "+mode = fast" in prompt and "+mode = safe" in prompt and "- config.txt" in prompt
    output = state.steps["tasks"].output
    assert output["resolutions"]["b"]["status"] == "resolved"
    events = asyncio.run(_control(tmp_path / "t.db", "t"))
    kinds = [(e["type"], e["data"].get("task")) for e in events if e["type"].startswith("task.")]
    assert kinds[-3:] == [("task.conflicted", "b"), ("task.resolved", "b"), ("task.merged", "b")]
    merged = [e for e in events if e["type"] == "task.merged" and e["data"]["task"] == "b"]
    assert merged[0]["data"]["resolved_by"] == "resolve-b"
    # `parallax tasks` says so too
    shown = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 't.db'}", "tasks", "t"],
        capture_output=True, text=True, timeout=120, cwd=repo,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("b "))
    assert "(conflict in config.txt: resolver resolved)" in line


@pytest.mark.parametrize(
    ("resolver", "why"),
    [
        ("exit 1", "exit"),
        ("true", "left conflict markers in config.txt"),
        ("printf 'name = demo\\nmode = fast+safe\\n' > config.txt; echo x > other.txt",
         "changed paths outside the conflicted files ['config.txt']: other.txt"),
        ("printf 'name = demo\\nmode = neither\\n' > config.txt", "verify failed (1)"),
    ],
)  # fmt: skip
def test_a_resolver_that_fails_leaves_the_conflict_recorded(tmp_path: Path, resolver: str, why: str) -> None:
    repo = init_repo(tmp_path / "r", {"config.txt": BASE})
    state = run_tasks(tmp_path, repo, graph(resolver))
    assert state.status == "failed"
    step = state.steps["tasks"]
    assert step.error is not None and "1 merge conflict(s)" in step.error
    assert state.tasks is not None
    b = state.tasks.tasks["b"]
    assert b.status == "succeeded"  # not merged
    assert b.resolution is not None and b.resolution.status == "failed"
    assert why in (b.resolution.error or "")
    assert sh(repo, "git", "show", "parallax/t/integration:config.txt") == "name = demo\nmode = fast\n"
    events = asyncio.run(_control(tmp_path / "t.db", "t"))
    conflicts = [e for e in events if e["type"] == "conflict.found"]
    assert len(conflicts) == 1
    assert "the resolver resolve-b failed" in str(conflicts[0]["data"])
    assert not [e for e in events if e["type"] == "task.merged" and e["data"]["task"] == "b"]


def test_without_a_resolver_the_conflict_is_only_recorded(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"config.txt": BASE})
    state = run_tasks(tmp_path, repo, graph(None))
    assert state.status == "failed"
    assert state.tasks is not None
    assert state.tasks.tasks["b"].status == "succeeded" and state.tasks.tasks["b"].resolution is None
    events = asyncio.run(_control(tmp_path / "t.db", "t"))
    assert not [e for e in events if e["type"].startswith(("task.conflicted", "task.resol"))]
    assert [e for e in events if e["type"] == "conflict.found"]


def test_with_a_review_queue_the_resolution_waits_for_approval(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"config.txt": BASE})
    plan = compile_pattern(yaml.safe_dump(graph(RESOLVE, review=True)), str(tmp_path / "tasks.yaml"))

    async def until(client: TaskClient, check: Any) -> TaskBoard:
        while True:  # woken by each append to the control stream; the timeout only re-checks
            await client.sync()
            if check(client.board):
                return client.board
            await client.wait_for_change(5)

    async def go() -> tuple[RunState, list[str]]:
        notes = []
        async with SqliteStore(tmp_path / "t.db") as store:
            run_id = await create_run(store, plan, run_id="t")
            runner = asyncio.create_task(Runner(store, run_id, RunOptions(workdir=repo)).run())
            try:
                spec, _ = await task_graph_of(store, "t")
                client = TaskClient(store, "t", "test", spec)
                await until(client, lambda b: b.awaiting_review() == ["a", "b"])
                notes.append(await decide_review(store, "t", repo, "a", approve=True, note="", by="me"))
                # b conflicts with a: the resolver runs, and its verified resolution is queued.
                notes.append(await decide_review(store, "t", repo, "b", approve=True, note="", by="me"))
                board = await until(client, lambda b: b.tasks["b"].resolution is not None)
                assert board.awaiting_review() == ["b"]
                assert board.tasks["b"].resolution.status == "resolved"  # type: ignore[union-attr]
                assert sh(repo, "git", "show", "parallax/t/integration:config.txt") == "name = demo\nmode = fast\n"
                _, diff = await task_diff(store, "t", "b", repo)
                notes.append(diff)
                notes.append(await verify_output(store, "t", "b"))
                notes.append(await decide_review(store, "t", repo, "b", approve=True, note="ok", by="me"))
                state = await runner
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            return state, notes

    state, notes = asyncio.run(go())
    assert "waits for review on parallax/t/resolve-b" in notes[1]
    assert "-mode = fast\n+mode = fast+safe" in notes[2]  # what approving brings in
    assert notes[3].startswith("exit 0")
    assert "as resolve-b resolved it" in notes[4]
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sh(repo, "git", "show", "parallax/t/integration:config.txt") == RESOLVED
    assert state.tasks is not None and state.tasks.tasks["b"].status == "merged"
