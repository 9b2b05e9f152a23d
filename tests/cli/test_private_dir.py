"""`.parallax/` (the default store, the server's admin token) is never staged by `git add -A`
in the repository it was created in (item 18 of the hardening issue)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.workspaces.test_parallel_coding import init_repo, sh

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_store_folder_is_ignored_by_git(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", {"a.txt": "a\n"})
    (repo / "p.yaml").write_text(
        yaml.safe_dump(
            {"pattern": "pipeline", "name": "p", "agents": {"one": {"kind": "command", "command": "echo hi"}}}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "run", "p.yaml", "-q"], cwd=repo, capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (repo / ".parallax" / "parallax.db").exists()
    sh(repo, "git", "add", "-A")
    staged = sh(repo, "git", "diff", "--cached", "--name-only").split()
    assert staged == ["p.yaml"]
    assert (repo / ".parallax").stat().st_mode & 0o077 == 0  # it will hold the admin token
