"""SIGTERM and SIGHUP to `parallax run` stop it the way Ctrl-C does: the agents' process groups
are killed (nothing keeps editing after Parallax exits), the exit code says which signal, and
the run stays resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_config import ROOT, parallax, project_with
from tests.processes import reap
from tests.waiting import wait_until

PATTERN = """\
pattern: fanout
name: long
agents:
  worker:
    kind: command
    command: "sh -c 'sleep 300 & echo $! > grandchild.pid; echo $$ > child.pid; wait'"
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not read its status yet


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_run_and_its_agents(tmp_path: Path, signum: signal.Signals) -> None:
    project = project_with(tmp_path, "")
    (project / "long.yaml").write_text(PATTERN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    env.update({"PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(project / "user-config")})
    child = subprocess.Popen(
        [sys.executable, "-m", "parallax", "run", "long.yaml", "--run-id", "long", "-q"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pids = [project / "child.pid", project / "grandchild.pid"]
        wait_until(
            lambda: all(p.exists() and p.read_text().strip() for p in pids), what="the agent started", timeout=120
        )
        agent, sleeper = (int(p.read_text()) for p in pids)
        assert alive(agent) and alive(sleeper)
        child.send_signal(signum)
        code = child.wait(timeout=120)
        stderr = child.stderr.read() if child.stderr else ""
    finally:
        reap(child)
    assert code == 128 + signum, stderr
    assert f"stopped by {signum.name}" in stderr and "Traceback" not in stderr
    wait_until(lambda: not alive(agent) and not alive(sleeper), what="the agent's process group gone", timeout=60)
    listed = parallax(project, "runs")
    assert listed.stdout.startswith("long\t") and "succeeded" not in listed.stdout  # not reported as done
    inspected = parallax(project, "inspect", "long", "--json")
    assert '"status": "running"' in inspected.stdout  # unfinished on the log: `parallax resume long` continues it
