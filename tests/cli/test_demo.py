from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_walkthrough_runs_on_a_fresh_store(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'demo.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", url, "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "won at seq 0" in out
    assert "lost (the tail was already 1)" in out
    assert "coordinator-1 refused: fencing token mismatch" in out
    # the other process saw all three records, live
    assert "0\ttask-1 claimed by worker-" in out
    assert "1\t[fence 'coordinator-2']" in out
    assert "2\trun.finished" in out
