from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallax", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, "PARALLAX_STORE": f"sqlite://{cwd / 'demo.db'}", **(env or {})},
    )


def test_feature_spec_demo_runs_offline_and_writes_the_spec(tmp_path: Path) -> None:
    env = dict.fromkeys(("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY", "PARALLAX_MODEL"), "")
    result = run("demo", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith("Offline: scripted answers")
    spec = json.loads((tmp_path / "feature_spec.json").read_text())
    document = spec["document"]
    assert set(document) >= {"frontend", "backend", "security", "devops", "product"}
    assert document["database"] == "postgres"  # agreed by backend and devops
    assert document["auth_method"] is None  # disputed: never picked
    conflicts = {(c["kind"], c["path"]) for c in spec["conflicts"]}
    assert conflicts == {
        ("disagreement", "auth_method"),
        ("disagreement", "rate_limit_per_minute"),
        ("disagreement", "data_retention_days"),
        ("rule", "endpoints have authz"),
        ("rule", "no sensitive data client-side"),
    }
    run_id = result.stdout.split("inspect with: parallax inspect ")[-1].split()[0]
    inspected = json.loads(run("inspect", run_id, "--json", cwd=tmp_path).stdout)
    assert inspected["status"] == "succeeded"
    assert [s["id"] for s in inspected["steps"]] == ["frontend", "backend", "security", "devops", "product", "merge"]
    assert all(s["usage"]["requests"] >= 1 for s in inspected["steps"][:5])


def test_streams_walkthrough(tmp_path: Path) -> None:
    result = run("streams", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "won at seq 0" in out
    assert "lost (the tail was already 1)" in out
    assert "coordinator-1 refused: fencing token mismatch" in out
    # the other process saw all three records, live
    assert "0\ttask-1 claimed by worker-" in out
    assert "1\t[fence 'coordinator-2']" in out
    assert "2\trun.finished" in out
