"""Git, as the workspaces use it: worktrees per task, what a task changed, commits, merges with
every conflict reported. Everything runs the real `git` binary (no library between us and the
repository), with a fixed identity and no user configuration, so results do not depend on the
machine's git setup.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from parallax.core.errors import UserError

_ENV = {
    "GIT_AUTHOR_NAME": "parallax",
    "GIT_AUTHOR_EMAIL": "parallax@localhost",
    "GIT_COMMITTER_NAME": "parallax",
    "GIT_COMMITTER_EMAIL": "parallax@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(UserError):
    """A git command failed; the message holds the command and git's own words."""


@dataclass(frozen=True)
class GitResult:
    code: int
    out: str
    err: str


async def git(cwd: Path, *args: str, check: bool = True, stdin: bytes | None = None) -> GitResult:
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}, **_ENV}
    env["HOME"] = str(cwd)  # no user ~/.gitconfig
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    result = GitResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and result.code != 0:
        detail = (result.err or result.out).strip().splitlines()
        raise GitError(f"git {' '.join(args)} (in {cwd}) failed: {detail[-1] if detail else result.code}")
    return result


async def repo_root(path: Path) -> Path:
    try:
        out = await git(path, "rev-parse", "--show-toplevel")
    except GitError:
        raise UserError(f"{path} is not inside a git repository") from None
    return Path(out.out.strip())


async def head(path: Path, ref: str = "HEAD") -> str:
    return (await git(path, "rev-parse", "--verify", f"{ref}^{{commit}}")).out.strip()


async def ref_exists(path: Path, ref: str) -> bool:
    return (await git(path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)).code == 0


async def tracked_files(path: Path, ref: str = "HEAD") -> list[str]:
    out = await git(path, "ls-tree", "-r", "--name-only", "-z", ref)
    return [f for f in out.out.split("\0") if f]


async def add_worktree(repo: Path, worktree: Path, branch: str, base: str) -> None:
    """A new worktree at `worktree` on a new branch `branch` starting at `base` (replacing a
    branch and folder left by an earlier attempt)."""
    if worktree.exists():
        await git(repo, "worktree", "remove", "--force", str(worktree), check=False)
    await git(repo, "worktree", "prune")
    worktree.parent.mkdir(parents=True, exist_ok=True)
    await git(repo, "worktree", "add", "--force", "-B", branch, str(worktree), base)


async def remove_worktree(repo: Path, worktree: Path) -> None:
    await git(repo, "worktree", "remove", "--force", str(worktree), check=False)


PRIVATE = ".shared"  # peers' snapshots live here in a worktree and are never part of its work


async def changed_paths(worktree: Path, base: str) -> list[str]:
    """Every path that differs from `base`: committed, staged, unstaged and untracked (renames
    count as both their old and new paths); peers' snapshots are not the task's work."""
    paths: set[str] = set()
    diff = await git(worktree, "diff", "--name-only", "-z", "--no-renames", base)
    paths.update(p for p in diff.out.split("\0") if p)
    untracked = await git(worktree, "ls-files", "--others", "--exclude-standard", "-z")
    paths.update(p for p in untracked.out.split("\0") if p)
    return sorted(p for p in paths if p != PRIVATE and not p.startswith(f"{PRIVATE}/"))


async def commit_all(worktree: Path, message: str) -> str | None:
    """Commit everything in the worktree; the new commit, or None if nothing changed."""
    await git(worktree, "add", "--all", "--", ".", f":(exclude){PRIVATE}")
    if (await git(worktree, "diff", "--cached", "--quiet", check=False)).code == 0:
        return None
    await git(worktree, "commit", "--quiet", "--no-verify", "-m", message)
    return await head(worktree)


@dataclass(frozen=True)
class MergeConflict:
    files: tuple[str, ...]
    ours: dict[str, str]  # file -> its content on the branch merged into
    theirs: dict[str, str]  # file -> its content on the branch being merged
    message: str


async def merge(worktree: Path, commit: str, message: str) -> MergeConflict | None:
    """Merge `commit` into the worktree's branch; on a conflict, record both sides of every
    conflicted file and abort, leaving the branch as it was (never a silent resolution)."""
    result = await git(worktree, "merge", "--no-ff", "--no-edit", "-m", message, commit, check=False)
    if result.code == 0:
        return None
    unmerged = await git(worktree, "diff", "--name-only", "--diff-filter=U", "-z", check=False)
    files = tuple(f for f in unmerged.out.split("\0") if f)
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for name in files:
        ours[name] = (await git(worktree, "show", f":2:{name}", check=False)).out
        theirs[name] = (await git(worktree, "show", f":3:{name}", check=False)).out
    await git(worktree, "merge", "--abort", check=False)
    detail = (result.out + result.err).strip().splitlines()
    return MergeConflict(files, ours, theirs, detail[-1] if detail else "merge failed")


async def diff(repo: Path, base: str, commit: str) -> str:
    return (await git(repo, "diff", "--stat", "--patch", base, commit)).out
