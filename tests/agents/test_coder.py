"""The `coder` agent offline: a scripted model (the test double at the model boundary) makes
real tool calls against a real git worktree; the tools refuse what the task may not touch,
and the verify loop sends the model back until the tests pass."""

from __future__ import annotations

import json
from pathlib import Path

from tests.workspaces.test_parallel_coding import init_repo, run_tasks, sh

BUGGY = "def add(a, b):\n    return a - b\n"
TEST = "import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"


def test_coder_fixes_a_bug_with_tools_confined_to_its_worktree(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"calc.py": BUGGY, "test_calc.py": TEST})
    answers = {
        "fix": [
            {"__tool__": "list_files", "args": {}},
            {"__tool__": "search", "args": {"pattern": "def add"}},
            {"__tool__": "read_file", "args": {"path": "calc.py"}},
            {"__tool__": "write_file", "args": {"path": "test_calc.py", "content": "# tests removed\n"}},
            {"__tool__": "read_file", "args": {"path": "../../../../../../etc/hostname"}},
            {"__tool__": "write_file", "args": {"path": "calc.py", "content": "def add(a, b):\n    return a * b\n"}},
            "Changed add.",
            {"__tool__": "run_verify", "args": {}},
            {"__tool__": "write_file", "args": {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"}},
            "Fixed add: it subtracted.",
        ]
    }
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    doc = {
        "pattern": "tasks",
        "name": "coder",
        "workers": 1,
        "tasks": {
            "fix": {
                "prompt": "add() is wrong; fix it.",
                "writes": ["calc.py"],
                "verify": "python3 -m unittest -q test_calc",
                "agent": {"kind": "coder", "model": f"scripted:{tmp_path / 'answers.json'}"},
            }
        },
    }
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    assert state.tasks is not None
    assert state.tasks.tasks["fix"].changed == ("calc.py",)
    assert sh(repo, "git", "show", "parallax/t/integration:calc.py") == "def add(a, b):\n    return a + b\n"
    assert sh(repo, "git", "show", "parallax/t/integration:test_calc.py") == TEST  # the refused write changed nothing

    import asyncio

    from parallax.streams.sqlite import SqliteStore

    async def agent_log() -> list[dict[str, object]]:
        async with SqliteStore(tmp_path / "t.db") as store:
            return [json.loads(r.body) for r in await store.read_all("runs/t/agents/fix") if r.body]

    log = asyncio.run(agent_log())
    results = [entry["result"] for entry in log if "result" in entry]
    assert any(str(r).startswith("refused: test_calc.py is outside this task's write set") for r in results)
    assert any("refused: " in str(r) and "outside the worktree" in str(r) for r in results)
    assert any("def add" in str(r) and "calc.py:1:" in str(r) for r in results)  # search
    assert any(str(r).startswith("exit 1") for r in results)  # run_verify saw the failing test
    iterations = [entry for entry in log if "iteration" in entry]
    assert [(i["iteration"], i["verify_exit"]) for i in iterations] == [(1, 1), (2, 0)]


def test_coder_gives_up_after_its_iteration_limit(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"calc.py": BUGGY, "test_calc.py": TEST})
    (tmp_path / "answers.json").write_text(json.dumps({"fix": ["I did nothing."]}))
    doc = {
        "pattern": "tasks",
        "name": "coder",
        "workers": 1,
        "tasks": {
            "fix": {
                "writes": ["calc.py"],
                "verify": "python3 -m unittest -q test_calc",
                "max_attempts": 1,
                "agent": {"kind": "coder", "model": f"scripted:{tmp_path / 'answers.json'}",
                          "settings": {"max_iterations": 2}},
            }
        },
    }  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.tasks is not None
    assert state.tasks.tasks["fix"].status == "failed"
    assert state.tasks.tasks["fix"].error == "verify still failing after 2 iteration(s)"
