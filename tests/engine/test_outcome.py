"""A run whose work failed never reports success (docs/engine.md, "When a run succeeds").

A run succeeds when every sink step succeeded. A merge succeeds only when at least
`min_contributions` of its inputs contributed (default: all of them), so a fan-out in which
agents failed fails unless the pattern allows the gaps; the CLI exits non-zero for any run that
did not succeed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def fanout(tmp_path: Path, agents: dict[str, str], merge: dict[str, Any] | None = None) -> Path:
    doc: dict[str, Any] = {
        "pattern": "fanout",
        "name": "outcome",
        "agents": {name: {"kind": "command", "command": command} for name, command in agents.items()},
        "retry": {"max_attempts": 1},  # a failure is final at once (the breaker would pace retries)
    }
    if merge is not None:
        doc["merge"] = merge
    path = tmp_path / "fanout.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def parallax(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'o.db'}", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def inspect(tmp_path: Path, run_id: str) -> dict[str, Any]:
    result = parallax(tmp_path, "inspect", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


FAIL = "echo 'no model today' >&2; exit 3"
OK = 'echo \'{"verdict": "ship"}\''


def test_a_fanout_in_which_every_agent_failed_fails(tmp_path: Path) -> None:
    pattern = fanout(tmp_path, {"a": FAIL, "b": FAIL, "c": FAIL})
    result = parallax(tmp_path, "run", str(pattern), "--run-id", "allfail", "-q")
    assert result.returncode != 0, result.stdout
    view = inspect(tmp_path, "allfail")
    assert view["status"] == "failed"
    merge = next(s for s in view["steps"] if s["id"] == "merge")
    assert merge["status"] == "failed"
    assert "0 of 3 inputs contributed" in merge["error"]


@pytest.mark.parametrize(
    ("merge", "status"),
    [
        (None, "failed"),  # default: every input must contribute
        ({"min_contributions": 2}, "succeeded"),  # the pattern allows one gap
        ({"min_contributions": 3}, "failed"),
    ],
)
def test_a_gap_fails_the_merge_unless_the_pattern_allows_it(tmp_path: Path, merge: Any, status: str) -> None:
    pattern = fanout(tmp_path, {"a": OK, "b": OK, "c": FAIL}, merge)
    result = parallax(tmp_path, "run", str(pattern), "--run-id", "gap", "-q")
    assert (result.returncode == 0) == (status == "succeeded"), result.stderr
    view = inspect(tmp_path, "gap")
    assert view["status"] == status
    gaps = [c for c in view["conflicts"] if c["kind"] == "gap"]
    assert [g["path"] for g in gaps] == ["c"]  # recorded either way


def test_a_vote_with_no_votes_fails(tmp_path: Path) -> None:
    doc = {
        "pattern": "vote",
        "name": "novote",
        "vote": {"field": "verdict"},
        "retry": {"max_attempts": 1},
        "agents": {n: {"kind": "command", "command": FAIL} for n in ("a", "b")},
    }
    path = tmp_path / "vote.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = parallax(tmp_path, "run", str(path), "--run-id", "novote", "-q")
    assert result.returncode != 0
    assert inspect(tmp_path, "novote")["status"] == "failed"
