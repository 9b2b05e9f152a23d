"""The distributed path through the CLI, as a user runs it: a nats-server, a `parallax worker`
process, and `parallax run PATTERN --submit` from another process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from parallax.streams.nats_server import NatsServer
from tests.nats_fixtures import nats_server

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
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        assert "coordinated 1 run(s)" in out.decode()
        inspect = subprocess.run(
            [*base, "inspect", run["run_id"], "--json"], cwd=ROOT, capture_output=True, timeout=60, check=True
        )
        assert json.loads(inspect.stdout)["status"] == "succeeded"
    finally:
        worker.kill()


def test_detach_needs_submit(nats_server: NatsServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", nats_server.url, "run", "examples/fanout.yaml", "--detach"],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"--detach needs --submit" in result.stderr
