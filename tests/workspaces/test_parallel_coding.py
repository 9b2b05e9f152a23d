"""Parallel coding end to end on real git repositories, worktrees and subprocesses: the example
project, write authority, contracts, handoff, environment isolation, and git conflicts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from parallax.core.state import RunState
from parallax.engine.api import create_run, load_run
from parallax.engine.runner import Runner, RunOptions
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore
from parallax.workspaces import git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "parallel-coding"


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def init_repo(path: Path, files: dict[str, str] | None = None, source: Path | None = None) -> Path:
    if source is not None:
        shutil.copytree(source, path)
    else:
        path.mkdir(parents=True)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "add", "-A")
    sh(path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return path


def run_tasks(tmp_path: Path, repo: Path, doc: dict[str, Any], env: dict[str, str] | None = None) -> RunState:
    plan = compile_pattern(yaml.safe_dump(doc), str(tmp_path / "tasks.yaml"))

    async def go() -> RunState:
        async with SqliteStore(tmp_path / "t.db") as store:
            run_id = await create_run(store, plan, run_id="t")
            return await Runner(store, run_id, RunOptions(workdir=repo, parent_env=env)).run()

    return asyncio.run(go())


def test_the_example_runs_and_integrates_with_passing_tests(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "inventory", source=EXAMPLE / "project")
    before = sh(repo, "git", "rev-parse", "HEAD")
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'x.db'}", "run",
         str(EXAMPLE / "tasks.yaml"), "--run-id", "inv", "--json"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert {t: v["status"] for t, v in state["tasks"].items()} == dict.fromkeys(
        ["contract", "store", "pricing", "changelog-store", "changelog-pricing", "tests"], "merged"
    )
    output = state["steps"][0]["output"]
    assert output["verify"]["exit"] == 0
    assert "Ran 3 tests" in output["verify"]["output"]
    branch = output["branch"]
    changelog = sh(repo, "git", "show", f"{branch}:CHANGELOG.md")
    assert "- store by SKU" in changelog and "- pricing in cents" in changelog
    # the user's branch and working tree are untouched until they ask (parallax apply)
    assert sh(repo, "git", "rev-parse", "HEAD") == before
    assert sh(repo, "git", "status", "--porcelain") == ""
    # each task worked on its own branch
    for task in state["tasks"]:
        assert sh(repo, "git", "rev-parse", "--verify", f"parallax/inv/{task}").strip()
    # the two changelog tasks declared the same file: their holds never overlapped
    events = asyncio.run(_control(tmp_path / "x.db", "inv"))
    spans = {}
    for event in events:
        task = event["data"].get("task")
        if task in ("changelog-store", "changelog-pricing"):
            if event["type"] == "task.claimed":
                spans[task] = [event["ts"], None]
            elif event["type"] == "task.succeeded":
                spans[task][1] = event["ts"]
    (a0, a1), (b0, b1) = spans["changelog-store"], spans["changelog-pricing"]
    assert a1 <= b0 or b1 <= a0
    # `tests` peered into store's worktree: a read-only snapshot, not part of its commit
    tests_commit = state["tasks"]["tests"]["changed"]
    assert tests_commit == ["tests/test_inventory.py"]


async def _control(db: Path, run_id: str) -> list[dict[str, Any]]:
    from parallax.core.events import decode_event

    async with SqliteStore(db) as store:
        records = await store.read_all(f"runs/{run_id}/control")
    out = []
    for r in records:
        e = decode_event(r.headers, r.body, r.seq_num, r.timestamp)
        if e is not None:
            out.append({"type": e.type, "data": e.data, "ts": e.timestamp})
    return out


def test_a_change_outside_the_write_set_fails_the_task_and_merges_nothing(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"app.py": "x = 1\n", "secret_config.py": "KEY = 'a'\n"})
    doc = {
        "pattern": "tasks",
        "name": "authority",
        "workers": 1,
        "tasks": {
            "edit": {
                "writes": ["app.py"],
                "agent": {
                    "kind": "command",
                    "command": "echo 'x = 2' > app.py; echo 'KEY = 1' > secret_config.py; touch new.txt",
                },
            }
        },
    }
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "failed"
    assert state.tasks is not None
    task = state.tasks.tasks["edit"]
    assert task.status == "failed"
    assert task.error == "changed paths outside its write set ['app.py']: new.txt, secret_config.py"
    integration = sh(repo, "git", "show", "parallax/t/integration:app.py")
    assert integration == "x = 1\n"  # nothing of it merged
    assert sh(repo, "git", "rev-list", "--count", "parallax/t/edit") == "1\n"  # no commit on the task branch


def test_environment_is_isolated_per_task(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    script = 'env > "$PARALLAX_TASK.env"; echo "GIT_USER=$(git config user.name)" >> "$PARALLAX_TASK.env"'
    doc = {
        "pattern": "tasks",
        "name": "env",
        "workers": 2,
        "tasks": {
            "one": {"writes": ["one.env"], "agent": {"kind": "command", "command": script, "env": ["GRANTED_TOKEN"]}},
            "two": {"writes": ["two.env"], "agent": {"kind": "command", "command": script}},
        },
    }
    parent = {**os.environ, "GRANTED_TOKEN": "g-1", "OTHER_SECRET": "s-2"}
    state = run_tasks(tmp_path, repo, doc, env=parent)
    assert state.status == "succeeded", state.steps["tasks"].error
    envs = {}
    for task in ("one", "two"):
        text = sh(repo, "git", "show", f"parallax/t/integration:{task}.env")
        envs[task] = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert envs["one"]["GRANTED_TOKEN"] == "g-1"
    assert "GRANTED_TOKEN" not in envs["two"]
    assert all("OTHER_SECRET" not in e for e in envs.values())
    assert envs["one"]["HOME"] != envs["two"]["HOME"]
    assert envs["one"]["TMPDIR"].endswith("/tmp/one")
    # Outside the git directory (coding agents refuse to edit under a `.git/` segment), under
    # the repository's .parallax/, which git ignores: the user's own status stays clean.
    assert envs["one"]["HOME"].startswith(f"{repo}/.parallax/runs/t/")
    assert envs["one"]["PWD"] == f"{repo}/.parallax/runs/t/worktrees/one"
    assert all(".git" not in Path(envs[t][k]).parts for t in envs for k in ("HOME", "TMPDIR", "PWD"))
    assert sh(repo, "git", "status", "--porcelain", "--ignored=no") == ""
    assert envs["one"]["PARALLAX_PORT_BASE"] != envs["two"]["PARALLAX_PORT_BASE"]
    # each task has a git identity in its own HOME; the repository's config is left alone
    assert (envs["one"]["GIT_USER"], envs["two"]["GIT_USER"]) == ("Parallax task one", "Parallax task two")
    assert "user" not in sh(repo, "git", "config", "--local", "--list")


def test_a_contract_change_reruns_the_tasks_that_read_it(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"api.txt": "v1\n"})
    doc = {
        "pattern": "tasks",
        "name": "contract",
        "workers": 2,
        "lease_s": 5,
        "tasks": {
            "owner": {"writes": ["api.txt"], "contracts": ["api.txt"],
                      "agent": {"kind": "command", "command": "sleep 1; echo v2 > api.txt"}},
            "reader": {"writes": ["client.txt"], "reads": ["api.txt"],
                       "agent": {"kind": "command", "command": "cp api.txt client.txt"}},
        },
    }  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    assert state.tasks is not None
    assert state.tasks.tasks["reader"].attempt == 2  # ran on v1 first, then again on v2
    assert sh(repo, "git", "show", "parallax/t/integration:client.txt") == "v2\n"


def test_integration_records_git_conflicts_with_both_sides(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"f.txt": "base\n"})

    async def go() -> git.MergeConflict | None:
        checkout = await git.open_repository(repo)
        await git.git(checkout, "checkout", "-q", "-b", "left")
        (repo / "f.txt").write_text("left\n")
        left = await git.commit_all(checkout, "left")
        await git.git(checkout, "checkout", "-q", "main")
        (repo / "f.txt").write_text("right\n")
        await git.commit_all(checkout, "right")
        assert left is not None
        return await git.merge(checkout, left, "merge left")

    conflict = asyncio.run(go())
    assert conflict is not None
    assert conflict.files == ("f.txt",)
    assert conflict.ours["f.txt"] == "right\n"
    assert conflict.theirs["f.txt"] == "left\n"
    assert (repo / "f.txt").read_text() == "right\n"  # aborted: nothing half-merged
    assert sh(repo, "git", "status", "--porcelain") == ""


@pytest.mark.parametrize("workers", [1, 3])
def test_the_board_is_a_fold_of_the_log(tmp_path: Path, workers: int) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    doc = {"pattern": "tasks", "name": "again", "workers": workers,
           "tasks": {"a": {"writes": ["b.txt"], "agent": {"kind": "command", "command": "echo b > b.txt"}}}}  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded"

    async def again() -> RunState:
        async with SqliteStore(tmp_path / "t.db") as store:
            return await load_run(store, "t")

    assert asyncio.run(again()).tasks.tasks["a"].status == "merged"  # type: ignore[union-attr]


def test_a_cli_preset_agent_works_inside_its_worktree(tmp_path: Path) -> None:
    """A stand-in executable named claude (a test double for the real CLI) edits a file in its
    working directory and reports in claude's stream-json format."""
    repo = init_repo(tmp_path / "r", {"README.md": "old\n"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib\n"
        "pathlib.Path('README.md').write_text('new\\n')\n"
        "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False, 'result': 'edited in ' + os.getcwd()}))\n"
    )
    fake.chmod(0o755)
    doc = {"pattern": "tasks", "name": "cli", "workers": 1,
           "tasks": {"docs": {"prompt": "Update the README.", "writes": ["README.md"], "agent": {"kind": "cli", "preset": "claude"}}}}  # fmt: skip
    state = run_tasks(tmp_path, repo, doc, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sh(repo, "git", "show", "parallax/t/integration:README.md") == "new\n"
    assert (repo / "README.md").read_text() == "old\n"  # the user's checkout is untouched


def test_a_tools_own_files_are_not_the_tasks_changes(tmp_path: Path) -> None:
    # A stand-in aider (a test double on PATH, printing as aider does) that edits the task's file
    # and leaves aider's own history and cache files in the worktree, as the real one does.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aider"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import pathlib\n"
        "pathlib.Path('app.py').write_text('fixed = True\\n')\n"
        "pathlib.Path('.aider.chat.history.md').write_text('# chat\\n')\n"
        "pathlib.Path('.aider.input.history').write_text('fix it\\n')\n"
        "cache = pathlib.Path('.aider.tags.cache.v4'); cache.mkdir(); (cache / 'cache.db').write_text('x')\n"
        "print('Applied edit to app.py')\n"
    )
    fake.chmod(0o755)
    repo = init_repo(tmp_path / "r", {"app.py": "fixed = False\n", ".aider.conf.yml": "model: sonnet\n"})
    doc = {
        "pattern": "tasks",
        "name": "aider",
        "tasks": {"fix": {"prompt": "- fix app.py", "writes": ["app.py"], "agent": {"kind": "cli", "preset": "aider"}}},
    }
    state = run_tasks(tmp_path, repo, doc, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert state.status == "succeeded", state.steps["tasks"].error
    files = sh(repo, "git", "ls-tree", "-r", "--name-only", "parallax/t/integration").split()
    assert sorted(files) == [".aider.conf.yml", "app.py"]  # the user's own .aider file stays; the tool's never land
    assert sh(repo, "git", "show", "parallax/t/integration:app.py") == "fixed = True\n"


def test_a_cli_agent_asking_for_its_login_sees_copies_of_its_config_files(tmp_path: Path) -> None:
    # A stand-in codex (a test double on PATH) that reports what its config says, from the task's
    # own HOME (where codex looks: $HOME/.codex).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "codex"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib\n"
        "config = pathlib.Path(os.environ['HOME']) / '.codex' / 'config.toml'\n"
        "seen = config.read_text() if config.exists() else 'no config'\n"
        "pathlib.Path(os.environ['PARALLAX_TASK'] + '.txt').write_text(seen)\n"
        "print(json.dumps({'type': 'item.completed', 'item': {'type': 'agent_message', 'text': 'done'}}))\n"
    )
    fake.chmod(0o755)
    user_home = tmp_path / "user"
    (user_home / ".codex").mkdir(parents=True)
    (user_home / ".codex" / "config.toml").write_text('model = "gpt-5-codex"\n')
    (user_home / ".codex" / "history.jsonl").write_text("private\n")  # not a config file: never copied
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    agent = {"kind": "cli", "preset": "codex"}
    doc = {
        "pattern": "tasks",
        "name": "login",
        "workers": 2,
        "tasks": {
            "with": {"prompt": "x", "writes": ["with.txt"], "agent": {**agent, "settings": {"login": True}}},
            "without": {"prompt": "x", "writes": ["without.txt"], "agent": agent},
        },
    }
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(user_home)}
    state = run_tasks(tmp_path, repo, doc, env=env)
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sh(repo, "git", "show", "parallax/t/integration:with.txt") == 'model = "gpt-5-codex"\n'
    assert sh(repo, "git", "show", "parallax/t/integration:without.txt") == "no config"
    copied = repo / ".parallax" / "runs" / "t" / "home" / "with" / ".codex"
    assert sorted(p.name for p in copied.iterdir()) == ["config.toml"]
    assert (copied / "config.toml").stat().st_mode & 0o777 == 0o600
    assert (user_home / ".codex" / "config.toml").read_text() == 'model = "gpt-5-codex"\n'


def test_a_task_sees_its_running_peers_and_their_messages_reach_it(tmp_path: Path) -> None:
    # Two agents at once. b waits (its own polling, up to a minute) until .shared/peers.md shows a
    # running with a.txt changed, keeps what it saw, and asks a over the run's inbox; a waits
    # until its .shared/inbox.md holds the message, and keeps it.
    repo = init_repo(tmp_path / "r", {"README.md": "x\n"})
    wait = "i=0; until {check}; do i=$((i+1)); [ $i -gt 1200 ] && exit 3; sleep 0.05; done"
    a = (
        "printf first > a.txt; "
        + wait.format(check="grep -q please .shared/inbox.md 2>/dev/null")
        + "; cp .shared/inbox.md a-inbox.md"
    )
    b = (
        wait.format(check="grep -q 'changed so far: a.txt' .shared/peers.md 2>/dev/null")
        + "; cp .shared/peers.md b-saw.md; cp .shared/peers.json b-saw.json; "
        + f'{sys.executable} -m parallax message "$PARALLAX_RUN_ID" --to a "please leave a.txt to me"'
    )
    doc = {
        "pattern": "tasks",
        "name": "peers",
        "workers": 2,
        "tasks": {
            "a": {"prompt": "Write a.txt", "writes": ["a.txt", "a-inbox.md"], "agent": {"kind": "command", "command": a}},
            "b": {"prompt": "Document a.txt", "writes": ["b-saw.md", "b-saw.json"],
                  "agent": {"kind": "command", "command": b, "env": ["PARALLAX_STORE", "PYTHONPATH"]}},
        },
    }  # fmt: skip
    env = {**os.environ, "PARALLAX_STORE": f"sqlite://{tmp_path / 't.db'}", "PYTHONPATH": str(ROOT)}
    state = run_tasks(tmp_path, repo, doc, env=env)
    assert state.status == "succeeded", state.steps["tasks"].error
    saw = sh(repo, "git", "show", "parallax/t/integration:b-saw.md")
    assert "## a (running)" in saw and "- writes: a.txt, a-inbox.md" in saw and "- task: Write a.txt" in saw
    peers = json.loads(sh(repo, "git", "show", "parallax/t/integration:b-saw.json"))
    assert peers["you"] == "b" and peers["peers"][0]["changed"] == ["a.txt"]
    inbox = sh(repo, "git", "show", "parallax/t/integration:a-inbox.md")
    assert "please leave a.txt to me" in inbox


def test_the_prompt_lists_the_tasks_running_beside_it() -> None:
    from parallax.core.tasks import TASK_CLAIMED, TASK_PROGRESS, TASK_STARTED, TaskBoard, TaskGraphSpec
    from parallax.engine.peers import prompt_section

    spec = TaskGraphSpec.model_validate(
        {"tasks": [{"id": t, "prompt": f"do {t}", "writes": [f"{t}/**"], "agent": {"kind": "command", "command": "true"}}
                   for t in ("a", "b", "c")]}
    )  # fmt: skip
    board = TaskBoard.of(spec)
    far = 2**62
    for kind, data in (
        (TASK_CLAIMED, {"task": "a", "worker": "w", "attempt": 1, "lease_until": far}),
        (TASK_STARTED, {"task": "a", "worker": "w", "attempt": 1, "base": "x"}),
        (TASK_PROGRESS, {"task": "a", "worker": "w", "attempt": 1, "changed": ["a/x.py"]}),
    ):
        board.apply(kind, data, 1)
    section = prompt_section(board, "r", "b")
    assert "## a (running)" in section and "- writes: a/**" in section and "- changed so far: a/x.py" in section
    assert "## c" not in section and "## b" not in section  # not running; and not itself
    assert prompt_section(board, "r", "a") == ""  # alone


def test_a_coder_on_a_scripted_model_is_seen_by_its_peer_while_it_works(tmp_path: Path) -> None:
    # a: the coder agent on the scripted model (a test double at the model boundary) writes a.txt,
    # then its final answer is held mid-stream until b releases it. b: a command agent that waits
    # until .shared/peers.md shows a running with a.txt changed, keeps what it saw, messages a,
    # and releases it.
    release = tmp_path / "release"
    answers = {
        "a": [{"__tool__": "write_file", "args": {"path": "a.txt", "content": "first\n"}},
              "Wrote a.txt; nothing else to change."],
        "_settings": {"hold_until": str(release), "chunk_size": 8},
    }  # fmt: skip
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    repo = init_repo(tmp_path / "r", {"README.md": "x\n"})
    # (given up after a minute, it still releases a, so that a broken build fails fast)
    wait = "i=0; until {check}; do i=$((i+1)); [ $i -gt 1200 ] && {{ touch {release}; exit 3; }}; sleep 0.05; done"
    b = (
        wait.format(check="grep -q 'changed so far: a.txt' .shared/peers.md 2>/dev/null", release=release)
        + "; cp .shared/peers.md b-saw.md; "
        + f'{sys.executable} -m parallax message "$PARALLAX_RUN_ID" --to a "a.txt is yours; I only read it"; '
        + f"touch {release}"
    )
    doc = {
        "pattern": "tasks",
        "name": "peers-coder",
        "workers": 2,
        "tasks": {
            "a": {"prompt": "Write a.txt", "writes": ["a.txt"],
                  "agent": {"kind": "coder", "model": f"scripted:{tmp_path / 'answers.json'}"}},
            "b": {"prompt": "Read a.txt", "writes": ["b-saw.md"],
                  "agent": {"kind": "command", "command": b, "env": ["PARALLAX_STORE", "PYTHONPATH"]}},
        },
    }  # fmt: skip
    env = {**os.environ, "PARALLAX_STORE": f"sqlite://{tmp_path / 't.db'}", "PYTHONPATH": str(ROOT)}
    state = run_tasks(tmp_path, repo, doc, env=env)
    assert state.status == "succeeded", state.steps["tasks"].error
    saw = sh(repo, "git", "show", "parallax/t/integration:b-saw.md")
    assert "## a (running)" in saw and "- writes: a.txt" in saw and "- changed so far: a.txt" in saw

    async def inbox() -> list[str]:
        async with SqliteStore(tmp_path / "t.db") as store:
            return [json.loads(r.body)["text"] for r in await store.read_all("runs/t/inbox/a")]

    assert asyncio.run(inbox()) == ["a.txt is yours; I only read it"]
