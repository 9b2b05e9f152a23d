"""Sandboxed code never runs on the host (items 1-4 of the hardening issue).

Every attack here plants something that git, or the host, would execute as the user running
Parallax (root in CI): a `core.fsmonitor` command in a `.gitconfig` a task wrote or a repository
tracks, hooks in the git dir, a rewritten `.git` pointer to a git dir the task controls, a verify
that touches the host, a read of /etc/shadow. The proof is always a marker file on the host that
must not exist, or a secret that must not be read.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.workspaces.test_parallel_coding import init_repo, run_tasks, sh

ROOT = Path(__file__).resolve().parents[2]
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def gitconfig_that_runs(marker: Path) -> str:
    """A git configuration whose every executing key touches `marker`."""
    cmd = f"touch {marker}; false"
    return (
        f'[core]\n\tfsmonitor = "{cmd}"\n\tpager = "{cmd}"\n\teditor = "{cmd}"\n'
        f'[diff]\n\texternal = "{cmd}"\n[credential]\n\thelper = "!{cmd}"\n'
    )


def tasks_doc(name: str, tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"pattern": "tasks", "name": name, "workers": 1, "tasks": tasks, **extra}


def test_a_repository_that_tracks_a_gitconfig_runs_nothing_through_the_cli(tmp_path: Path) -> None:
    """A tracked `.gitconfig` with an fsmonitor command ran many times under `parallax run`
    (host-side git ran with HOME set to the worktree)."""
    marker = tmp_path / "ran"
    repo = init_repo(tmp_path / "r", {".gitconfig": gitconfig_that_runs(marker), "a.txt": "a\n"})
    pattern = tmp_path / "tasks.yaml"
    pattern.write_text(
        yaml.safe_dump(
            tasks_doc(
                "tracked", {"edit": {"writes": ["a.txt"], "agent": {"kind": "command", "command": "echo b > a.txt"}}}
            )
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'p.db'}", "run", str(pattern), "-q",
         "--run-id", "tracked"],
        cwd=repo, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "host-side git executed the tracked .gitconfig"
    assert sh(repo, "git", "show", "parallax/tracked/integration:a.txt") == "b\n"


@needs_bwrap
def test_git_config_written_by_a_sandboxed_task_is_never_read(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = gitconfig_that_runs(marker)
    script = (
        "cat > .gitconfig <<'EOF'\n" + config + "EOF\n"
        'mkdir -p "$HOME/.config/git" && cp .gitconfig "$HOME/.gitconfig" && cp .gitconfig "$HOME/.config/git/config"\n'
        "printf '* diff=evil filter=evil\\n' > .gitattributes\n"
        "echo done > out.txt\n"
    )
    repo = init_repo(tmp_path / "r", {"tools/plant.sh": script})
    doc = tasks_doc(
        "planted",
        {"plant": {"writes": ["out.txt", ".gitconfig", ".gitattributes"], "sandbox": True,
                   "agent": {"kind": "command", "command": "sh tools/plant.sh"}}},
    )  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    assert not marker.exists(), "host-side git executed configuration the sandboxed task wrote"
    assert sh(repo, "git", "show", "parallax/t/integration:out.txt") == "done\n"


HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout", "post-merge",
         "pre-merge-commit", "reference-transaction", "post-rewrite", "post-index-change")  # fmt: skip


def test_hooks_planted_in_the_git_dir_never_run(tmp_path: Path) -> None:
    """Parallax's own worktree add, commit and merge run no hook (a task outside the sandbox
    could have planted them; so could the repository's owner by accident)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    repo = init_repo(tmp_path / "r", {"a.txt": "a\n", "b.txt": "b\n"})
    for hook in HOOKS:
        path = repo / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marks / hook}\n")
        path.chmod(0o755)
    doc = tasks_doc(
        "hooks",
        {
            "one": {"writes": ["a.txt"], "agent": {"kind": "command", "command": "echo 1 > a.txt"}},
            "two": {"writes": ["b.txt"], "agent": {"kind": "command", "command": "echo 2 > b.txt"}},
            "three": {"after": ["one", "two"], "writes": ["c.txt"],
                      "agent": {"kind": "command", "command": "cat a.txt b.txt > c.txt"}},
        },
    )  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sorted(p.name for p in marks.iterdir()) == []
    assert sh(repo, "git", "show", "parallax/t/integration:c.txt") == "1\n2\n"


# The task builds a git dir of its own (config with an fsmonitor command, objects borrowed from
# the real repository through alternates, a copy of its index) and points its `.git` file at it.
REPOINT = r"""
admin=$(sed -n 's/^gitdir: //p' .git)
common=$(cd "$admin" && cd "$(cat commondir)" && pwd)
fake="$PWD/../fake-git-$$"
mkdir -p "$fake/objects/info" "$fake/refs/heads"
echo "$common/objects" > "$fake/objects/info/alternates"
git --git-dir="$admin" rev-parse HEAD > "$fake/HEAD" 2>/dev/null || cat "$admin/HEAD" > "$fake/HEAD"
cp "$admin/index" "$fake/index" 2>/dev/null
printf '[core]\n\trepositoryformatversion = 0\n\tfsmonitor = "touch MARKER; false"\n' > "$fake/config"
echo "gitdir: $fake" > .git || exit 0
echo done > out.txt
"""


def test_a_rewritten_git_pointer_is_refused_not_followed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    repo = init_repo(tmp_path / "r", {"tools/repoint.sh": REPOINT.replace("MARKER", str(marker))})
    doc = tasks_doc(
        "repoint", {"evil": {"writes": ["out.txt"], "agent": {"kind": "command", "command": "sh tools/repoint.sh"}}}
    )
    state = run_tasks(tmp_path, repo, doc)
    assert not marker.exists(), "host-side git followed the task's .git pointer"
    assert state.tasks is not None
    task = state.tasks.tasks["evil"]
    assert task.status == "failed" and task.attempt == 1  # refused at once, not retried
    assert "was changed to point somewhere else" in (task.error or "")


@needs_bwrap
def test_a_sandboxed_task_cannot_rewrite_its_git_pointer(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = REPOINT.replace("MARKER", str(marker)).replace('echo "gitdir: $fake" > .git || exit 0',
                                                               'echo "gitdir: $fake" > .git && echo rewrote > out.txt && exit 0')  # fmt: skip
    repo = init_repo(tmp_path / "r", {"tools/repoint.sh": script})
    doc = tasks_doc(
        "repoint",
        {
            "evil": {
                "writes": ["out.txt"],
                "sandbox": True,
                "agent": {"kind": "command", "command": "sh tools/repoint.sh"},
            }
        },
    )
    state = run_tasks(tmp_path, repo, doc)
    assert not marker.exists()
    assert state.status == "succeeded", state.steps["tasks"].error
    assert sh(repo, "git", "show", "parallax/t/integration:out.txt") == "done\n"  # the write to .git failed


@needs_bwrap
def test_the_graph_verify_runs_in_the_sandbox_read_only(tmp_path: Path) -> None:
    """The graph's verify runs the agents' code (here: their test file): with a sandboxed task
    in the graph it must run sandboxed too, the integration worktree read-only."""
    outside = tmp_path / "outside"
    outside.mkdir()
    test_file = (
        "import os, subprocess\n"
        f"open('{outside}/escaped', 'w').write('host')\n"
    )  # fmt: skip
    verify = (
        "echo uid=$(id -u); python3 tests_by_agent.py 2>/dev/null; echo wrote-host=$?; "
        "touch in-worktree 2>/dev/null; echo wrote-worktree=$?; "
        "cat /etc/shadow >/dev/null 2>&1; echo read-shadow=$?; "
        'touch "$HOME/scratch" && echo wrote-scratch=0'
    )
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    doc = tasks_doc(
        "verify",
        {"agent": {"writes": ["tests_by_agent.py"], "sandbox": True,
                   "agent": {"kind": "command", "command": f"cat > tests_by_agent.py <<'EOF'\n{test_file}EOF"}}},
        verify=verify,
    )  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    output = state.steps["tasks"].output["verify"]["output"]
    assert "uid=1000" in output
    assert "wrote-host=1" in output and not (outside / "escaped").exists()
    assert "wrote-worktree=1" in output
    assert "read-shadow=1" in output
    assert "wrote-scratch=0" in output


@needs_bwrap
def test_a_task_verify_runs_sandboxed_with_the_worktree_read_only(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    doc = tasks_doc(
        "task-verify",
        {"agent": {"writes": ["a.txt"], "sandbox": True, "agent": {"kind": "command", "command": "echo x > a.txt"},
                   "verify": f"touch {outside}/escaped 2>/dev/null; touch stray.txt 2>/dev/null; test \"$(id -u)\" = 1000"}},
    )  # fmt: skip
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error  # no stray.txt: nothing outside the write set
    assert not (outside / "escaped").exists()


@needs_bwrap
def test_host_secrets_in_etc_are_not_readable_in_the_sandbox(tmp_path: Path) -> None:
    """Inside, uid 1000 maps to the host's uid (root in CI): /etc is an allow-list, so shadow,
    gshadow, ssh host keys and /etc/ssl/private are simply not there; the tools still work."""
    probe = (
        "for f in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssl/private /etc/ssh /etc/pip.conf /etc/npmrc; do\n"
        '  if cat "$f" >/dev/null 2>&1 || ls "$f" >/dev/null 2>&1; then echo "$f: readable"; else echo "$f: hidden"; fi\n'
        "done > probe.txt\n"
        "python3 -c 'import ssl, json; ssl.create_default_context(); print(\"python: ok\")' >> probe.txt\n"
        "git --version >/dev/null && echo 'git: ok' >> probe.txt\n"
        "getent passwd root >/dev/null && echo 'passwd: ok' >> probe.txt\n"
    )
    repo = init_repo(tmp_path / "r", {"tools/probe.sh": probe})
    doc = tasks_doc(
        "etc",
        {
            "probe": {
                "writes": ["probe.txt"],
                "sandbox": True,
                "agent": {"kind": "command", "command": "sh tools/probe.sh"},
            }
        },
    )
    state = run_tasks(tmp_path, repo, doc)
    assert state.status == "succeeded", state.steps["tasks"].error
    lines = sh(repo, "git", "show", "parallax/t/integration:probe.txt").splitlines()
    assert [line for line in lines if line.endswith("readable")] == []
    assert {"python: ok", "git: ok", "passwd: ok"} <= set(lines)
