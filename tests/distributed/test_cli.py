"""The distributed path through the CLI, as a user runs it: a nats-server, a `parallax worker`
process, and `parallax run PATTERN --submit` from another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from parallax.streams.nats_server import NatsServer
from tests.nats_fixtures import nats_server
from tests.processes import reap

__all__ = ["nats_server"]
ROOT = Path(__file__).resolve().parents[2]


def test_submit_a_yaml_pattern_to_a_worker(nats_server: NatsServer, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "parallax", "--store", nats_server.url]
    worker = subprocess.Popen(
        [*base, "worker", "--exit-when-idle"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        result = subprocess.run(
            [*base, "run", "examples/fanout.yaml", "--submit", "--json"],
            cwd=ROOT, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        run = json.loads(result.stdout)
        assert run["status"] == "succeeded"
        assert {s["id"]: s["status"] for s in run["steps"]} == {s["id"]: "succeeded" for s in run["steps"]}
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, out.decode()
        assert "coordinated 1 run(s)" in out.decode()
        inspect = subprocess.run(
            [*base, "inspect", run["run_id"], "--json"], cwd=ROOT, capture_output=True, timeout=120, check=True
        )
        assert json.loads(inspect.stdout)["status"] == "succeeded"
    finally:
        reap(worker)


def test_detach_needs_submit(nats_server: NatsServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", nats_server.url, "run", "examples/fanout.yaml", "--detach"],
        cwd=ROOT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"--detach needs --submit" in result.stderr


def test_workers_claim_tasks_of_a_submitted_task_graph(nats_server: NatsServer, tmp_path: Path) -> None:
    """Two `parallax worker` processes in the repository serve a submitted task graph: one
    coordinates (its own task worker included), and tasks are claimed from the other too."""
    import yaml

    from tests.workspaces.test_parallel_coding import init_repo, sh

    repo = init_repo(tmp_path / "repo", {f"m{i}.txt": "0\n" for i in range(6)})
    tasks = {
        f"t{i}": {"writes": [f"m{i}.txt"], "agent": {"kind": "command", "command": f"sleep 1; echo done > m{i}.txt"}}
        for i in range(6)
    }
    (tmp_path / "graph.yaml").write_text(
        yaml.safe_dump({"pattern": "tasks", "name": "g", "workers": 1, "tasks": tasks})
    )
    base = [sys.executable, "-m", "parallax", "--store", nats_server.url]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [*base, "worker", "--run", "graph", "--exit-when-idle", "--name", f"w{i}"],
            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        result = subprocess.run(
            [*base, "run", str(tmp_path / "graph.yaml"), "--run-id", "graph", "--submit", "--json"],
            cwd=repo, capture_output=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        run = json.loads(result.stdout)
        assert run["status"] == "succeeded"
        assert {t: v["status"] for t, v in run["tasks"].items()} == {f"t{i}": "merged" for i in range(6)}
        outputs = [w.communicate(timeout=120)[0].decode() for w in workers]
        remote = sum(
            int(line.split(", ")[1].split()[0]) for out in outputs for line in out.splitlines() if "task(s)" in line
        )
        assert remote >= 1, outputs  # tasks were claimed through the distributed workers' boards too
        for i in range(6):
            assert sh(repo, "git", "show", f"parallax/graph/integration:m{i}.txt") == "done\n"
    finally:
        for worker in workers:
            reap(worker)
