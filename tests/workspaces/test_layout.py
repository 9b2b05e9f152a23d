"""Where worktrees live (workspaces/workspace.py `workspaces_root`): never inside a `.git`
directory, by default in the repository's git-ignored `.parallax/`."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallax.core.errors import UserError
from parallax.workspaces.git import Checkout
from parallax.workspaces.workspace import workspaces_root


def test_worktrees_live_outside_the_git_directory(tmp_path: Path) -> None:
    repo = Checkout(tmp_path / ".git", tmp_path)
    root = workspaces_root(repo, {})
    assert root == tmp_path / ".parallax" and ".git" not in root.parts
    assert (root / ".gitignore").read_text().splitlines()[-1] == "*"  # git ignores the whole folder
    assert workspaces_root(repo, {"PARALLAX_WORKTREES": str(tmp_path / "elsewhere")}) == tmp_path / "elsewhere"
    for bad in ("relative/path", str(tmp_path / ".git" / "worktrees")):
        with pytest.raises(UserError, match="PARALLAX_WORKTREES"):
            workspaces_root(repo, {"PARALLAX_WORKTREES": bad})
