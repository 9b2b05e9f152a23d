"""What a `git worktree add` killed midway leaves must not stop the next one.

Found by a loaded run of tests/tasks/test_resume_repair.py: killed while git was writing its
`commondir` (made, still empty), the half-made entry of task t0 made every later
`worktree add -B` (of t1, t2, t3: git reads every worktree's refs to check the branch is free)
die with "failed to read .../worktrees/t0/commondir: Success", until t0 itself was made again; with t0 still
claimed by the dead worker, the other tasks used up their attempts and the run failed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from parallax.workspaces.git import add_worktree, attach_worktree, common_dir, head, open_repository
from tests.workspaces.test_parallel_coding import init_repo


def killed_add(repo: Path, worktree: Path, name: str) -> Path:
    """The entry git had written when the add was killed: locked, gitdir, commondir still empty."""
    entry = repo / ".git" / "worktrees" / name
    entry.mkdir(parents=True)
    (entry / "locked").write_text("initializing")
    worktree.mkdir(parents=True)
    (worktree / ".git").write_text(f"gitdir: {entry}\n")
    (entry / "gitdir").write_text(f"{worktree / '.git'}\n")
    (entry / "commondir").write_text("")
    return entry


async def test_a_half_made_entry_does_not_stop_other_worktrees(tmp_path: Path) -> None:
    repo_path = init_repo(tmp_path / "repo", {"a.txt": "a\n"})
    repo = await open_repository(repo_path)
    base = await head(repo)
    worktrees = repo_path / ".parallax" / "runs" / "k" / "worktrees"
    killed_add(repo_path, worktrees / "t0", "t0")
    plain = ["git", "worktree", "add", "--force", "-B", "probe", str(tmp_path / "probe"), base]
    probe = subprocess.run(plain, cwd=repo_path, capture_output=True, text=True)
    assert probe.returncode != 0 and "failed to read" in probe.stderr  # what git itself makes of it

    t1 = await add_worktree(repo, worktrees / "t1", "parallax/k/t1", base)  # another task's worktree
    assert (t1.work_tree / "a.txt").read_text() == "a\n"
    t0 = await add_worktree(repo, worktrees / "t0", "parallax/k/t0", base)  # the task itself, again
    assert (t0.work_tree / "a.txt").read_text() == "a\n"
    entries = sorted(p.name for p in ((await common_dir(repo)) / "worktrees").iterdir())
    assert len(entries) == 2 and not any((repo_path / ".git" / "worktrees" / e / "locked").exists() for e in entries)
    listing = subprocess.run(["git", "worktree", "list"], cwd=repo_path, capture_output=True, text=True, check=True)
    assert str(worktrees / "t0") in listing.stdout and str(worktrees / "t1") in listing.stdout


async def test_an_integration_worktree_whose_pointer_was_half_written_is_made_again(tmp_path: Path) -> None:
    """Killed while git was writing the worktree's `.git` file (made, still empty): the
    integration worktree is made again, not reported as "not a worktree pointer"."""
    repo_path = init_repo(tmp_path / "repo", {"a.txt": "a\n"})
    repo = await open_repository(repo_path)
    subprocess.run(["git", "branch", "parallax/k/integration"], cwd=repo_path, check=True)
    folder = repo_path / ".parallax" / "runs" / "k" / "integration"
    entry = killed_add(repo_path, folder, "integration")
    (folder / ".git").write_text("")
    (entry / "commondir").write_text("../..\n")
    made = await attach_worktree(repo, folder, "parallax/k/integration")
    assert (made.work_tree / "a.txt").read_text() == "a\n"
    assert (folder / ".git").read_text().startswith("gitdir: ")
