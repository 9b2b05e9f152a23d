"""One launch path: the same parallax.toml (budget, concurrency, hooks) applies the same way to a
run started from each entry point: the CLI, the server's POST /runs and its schedules, the MCP
tools, and a worker coordinating a submitted run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from parallax.engine import api
from parallax.server.mcp_tools import ParallaxTools
from parallax.settings import Settings
from parallax.streams.sqlite import SqliteStore
from tests.server.live_server import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "launch-test-token-0123456789"
CONFIG = """
[budget]
max_tokens = 12345

[limits]
concurrency = 2

[hooks]
on_finish = "cat > finished-$PARALLAX_RUN_ID.json"
"""


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "parallax.toml").write_text(CONFIG)
    (folder / ".parallax").mkdir()
    return folder


def pattern(folder: Path, name: str) -> str:
    """Four agents that each note when they start and end (to see how many ran at once)."""
    times = folder / f"{name}.times"
    agents = {
        f"a{i}": {"kind": "command", "command": f"echo start >> {times}; sleep 0.3; echo end >> {times}"}
        for i in range(4)
    }
    text = json.dumps({"pattern": "fanout", "name": name, "agents": agents})
    (folder / f"{name}.yaml").write_text(text)
    return f"{name}.yaml"


def env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PARALLAX_TOKEN": TOKEN}


def parallax(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallax", *args], cwd=folder, env=env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def runs_of(folder: Path, name: str) -> list[str]:
    async def go() -> list[str]:
        async with SqliteStore(folder / ".parallax" / "parallax.db") as store:
            return [r.run_id for r in await api.list_runs(store) if r.name == name]

    return asyncio.run(go()) if (folder / ".parallax" / "parallax.db").exists() else []


def finished_run(folder: Path, run_id: str) -> Any:
    """The run's state once its on_finish hook has run."""
    wait_until((folder / f"finished-{run_id}.json").exists, timeout=120, what=f"the on_finish hook of {run_id}")

    async def state() -> Any:
        async with SqliteStore(folder / ".parallax" / "parallax.db") as store:
            return await api.load_run(store, run_id)

    return asyncio.run(state())


def assert_settings_applied(folder: Path, name: str) -> None:
    """The run's plan has the configured budget, at most 2 agents ran at once, on_finish ran."""
    [run_id] = wait_until(lambda: runs_of(folder, name), timeout=120, what=f"a run of {name}")
    run = finished_run(folder, run_id)
    assert run.status == "succeeded", run.error
    assert run.plan is not None and run.plan.budget.max_tokens == 12345
    peak = current = 0
    for line in (folder / f"{name}.times").read_text().split():
        current += 1 if line == "start" else -1
        peak = max(peak, current)
    assert peak <= 2, f"{peak} agents ran at once; the configured concurrency is 2"
    assert json.loads((folder / f"finished-{run_id}.json").read_text())["event"]["data"]["status"] == "succeeded"


def test_the_cli(tmp_path: Path) -> None:
    folder = project(tmp_path)
    result = parallax(folder, "run", pattern(folder, "cli"), "-q")
    assert result.returncode == 0, result.stderr
    assert_settings_applied(folder, "cli")


def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    folder = project(tmp_path)
    port = free_port()
    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "parallax", "serve", "--port", str(port)], cwd=folder,
                                   env=env(), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                return True
        except OSError:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            return False

    try:
        wait_until(healthy, timeout=60, what="the server")
        yield folder, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_server(server: tuple[Path, str]) -> None:
    folder, base = server
    post(base, "/runs", {"target": pattern(folder, "served")})
    assert_settings_applied(folder, "served")


def test_a_schedule(server: tuple[Path, str]) -> None:
    folder, base = server
    text = (folder / pattern(folder, "scheduled")).read_text()
    post(base, "/schedules", {"id": "every-second", "cron": "* * * * * *", "pattern": text})
    assert_settings_applied_first(folder, "scheduled")


def assert_settings_applied_first(folder: Path, name: str) -> None:
    """As `assert_settings_applied`, for the first run of a schedule that may fire again."""
    first = wait_until(lambda: runs_of(folder, name), timeout=120, what=f"a run of {name}")[0]
    run = finished_run(folder, first)
    assert run.status == "succeeded" and run.plan is not None and run.plan.budget.max_tokens == 12345


def test_the_mcp_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = project(tmp_path)
    monkeypatch.chdir(folder)
    target = pattern(folder, "mcp")

    async def go() -> None:
        async with SqliteStore(folder / ".parallax" / "parallax.db") as store:
            tools = ParallaxTools(store, settings=Settings.load(folder, environ={}))
            started = await tools.start_run(target)
            await tools.running[started["run_id"]]
            await tools.close()

    asyncio.run(go())
    assert_settings_applied(folder, "mcp")


def test_a_worker_coordinating_a_submitted_run(tmp_path: Path) -> None:
    folder = project(tmp_path)
    submitted = parallax(folder, "run", pattern(folder, "submitted"), "--submit", "--detach")
    assert submitted.returncode == 0, submitted.stderr
    worker = parallax(folder, "worker", "--exit-when-idle", timeout=180)
    assert worker.returncode == 0, worker.stderr
    assert_settings_applied(folder, "submitted")
