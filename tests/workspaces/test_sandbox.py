"""The bubblewrap sandbox holds, even when the suite runs as root: an agent inside cannot write
outside its worktree, remount a system path, reach a loopback server outside, or see host
processes; it can write its worktree. Without bwrap, asking for the sandbox is a clear error."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.workspaces.test_parallel_coding import init_repo, run_tasks, sh

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

PROBE = r"""
out=probe.txt
: > "$out"
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1: yes" >> "$out"; else echo "$1: no" >> "$out"; fi; }
try write-etc 'echo x > /etc/parallax-probe'
try write-usr 'echo x > /usr/parallax-probe'
try write-outside "echo x > '$PROBE_OUTSIDE/escaped'"
try write-repo "echo x > '$PROBE_REPO/escaped'"
try remount-usr 'mount -o remount,rw /usr'
try remount-root 'mount -o remount,rw /'
try connect "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $PROBE_PORT), timeout=2)'"
try see-host-pid "test -e /proc/$PROBE_PID"
try write-worktree 'echo x > inside.txt'
try write-tmp 'echo x > /tmp/t'
echo "uid: $(id -u)" >> "$out"
"""


def queued_connection(server: socket.socket) -> bool:
    """Whether anyone connected (the kernel queues connections to a listening socket)."""
    server.setblocking(False)
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def test_an_agent_cannot_escape_the_sandbox(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"tools/probe.sh": PROBE})
    outside = tmp_path / "outside"
    outside.mkdir()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    env = {**os.environ, "PROBE_OUTSIDE": str(outside), "PROBE_REPO": str(repo), "PROBE_PORT": str(port),
           "PROBE_PID": str(os.getpid())}  # fmt: skip
    doc = {
        "pattern": "tasks",
        "name": "sandbox",
        "workers": 1,
        "tasks": {
            "probe": {
                "writes": ["probe.txt", "inside.txt"],
                "sandbox": True,
                "agent": {"kind": "command", "command": "sh tools/probe.sh",
                          "env": ["PROBE_OUTSIDE", "PROBE_REPO", "PROBE_PORT", "PROBE_PID"]},
            }
        },
    }  # fmt: skip
    try:
        state = run_tasks(tmp_path, repo, doc, env=env)
        reached = queued_connection(server)
    finally:
        server.close()
    assert state.status == "succeeded", state.steps["tasks"].error
    results = dict(
        line.split(": ", 1) for line in sh(repo, "git", "show", "parallax/t/integration:probe.txt").splitlines()
    )
    # Outside paths under /tmp land in the sandbox's private /tmp (a tmpfs that vanishes with
    # it), so for those the proof is on the host side, below.
    results.pop("write-outside")
    results.pop("write-repo")
    assert results == {
        "write-etc": "no",
        "write-usr": "no",
        "remount-usr": "no",
        "remount-root": "no",
        "connect": "no",
        "see-host-pid": "no",
        "write-worktree": "yes",
        "write-tmp": "yes",
        "uid": "1000",
    }
    assert not reached
    assert not (outside / "escaped").exists()
    assert not (repo / "escaped").exists()
    assert not Path("/etc/parallax-probe").exists()


def test_the_network_is_there_when_the_task_allows_it(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    connect = (
        f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' && echo ok > net.txt"
    )
    doc = {"pattern": "tasks", "name": "net", "workers": 1,
           "tasks": {"net": {"writes": ["net.txt"], "sandbox": True, "network": True,
                             "agent": {"kind": "command", "command": connect}}}}  # fmt: skip
    try:
        state = run_tasks(tmp_path, repo, doc)
        reached = queued_connection(server)
    finally:
        server.close()
    assert state.status == "succeeded", state.steps["tasks"].error
    assert reached


def test_without_bwrap_the_sandbox_is_a_clear_error(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": ""})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "git"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    doc = {"pattern": "tasks", "name": "nobwrap", "workers": 1,
           "tasks": {"t": {"writes": ["b.txt"], "sandbox": True, "agent": {"kind": "command", "command": "touch b.txt"}}}}  # fmt: skip
    state = run_tasks(tmp_path, repo, doc, env={**os.environ, "PATH": str(bin_dir)})
    assert state.status == "failed"
    assert state.tasks is not None
    error = state.tasks.tasks["t"].error or ""
    assert "bwrap is not on PATH" in error and "apt-get install bubblewrap" in error
