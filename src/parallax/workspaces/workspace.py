"""One isolated workspace per task, and the integration branch they merge into.

Layout, under the repository's top level in `.parallax/` (which holds a `.gitignore` of `*`, so
the user's `git status` and `git add -A` never see it), and never inside the git directory:
coding agents treat any path with a `.git/` segment as theirs not to touch (Claude Code refuses
every edit there), so a worktree under `.git/` would be a task nobody can do.

    .parallax/runs/<run>/worktrees/<task>     the task's worktree, branch parallax/<run>/<task>
    .parallax/runs/<run>/home/<task>          its HOME
    .parallax/runs/<run>/tmp/<task>           its TMPDIR
    .parallax/runs/<run>/integration          worktree of parallax/<run>/integration

`PARALLAX_WORKTREES` (an absolute path) puts `runs/<run>/...` under another root instead.

A task starts from the integration head, or from its dependencies' commits (handoff: the first
dependency's commit with the others merged in). It gets its own port range
(`PARALLAX_PORT_BASE`, `PARALLAX_PORT_COUNT`) and an environment built from an allow-list, plus
the variables its spec grants by name. When it finishes, every changed path is checked against
its write set: a path outside it fails the task with the paths named, and nothing is committed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parallax.agents.process import agent_environment
from parallax.core.errors import UserError
from parallax.core.tasks import TaskSpec, in_write_set
from parallax.project import PRIVATE_DIR_NAME, ensure_folder
from parallax.workspaces import git
from parallax.workspaces.peering import Snapshot, remove_tree, snapshot

PORTS_PER_TASK = 100
FIRST_PORT = 20000


_LOCKS: dict[Path, asyncio.Lock] = {}


def _repo_lock(repo: Path) -> asyncio.Lock:
    lock = _LOCKS.get(repo)
    if lock is None:
        lock = _LOCKS[repo] = asyncio.Lock()
    return lock


class HandoffConflict(Exception):
    def __init__(self, task: str, conflict: git.MergeConflict) -> None:
        super().__init__(f"task {task}: its dependencies' commits conflict in {', '.join(conflict.files)}")
        self.conflict = conflict


@dataclass
class Workspace:
    task: str
    checkout: git.Checkout  # the worktree and the git dir Parallax made for it (never re-read from it)
    branch: str
    base: str
    home: Path
    tmp: Path
    ports: tuple[int, int]
    peers: dict[str, Snapshot] = field(default_factory=dict[str, Snapshot])

    @property
    def path(self) -> Path:
        return self.checkout.work_tree

    def environment(
        self, granted: Sequence[str], parent: Mapping[str, str] | None = None, home_files: Sequence[str] = ()
    ) -> dict[str, str]:
        """The task's environment: the allow-list, what it is granted, its own HOME and TMPDIR.
        `home_files` (a tool's config and login, relative to the user's HOME) are copied into
        the task's HOME, mode 0600; the user's own files are only read."""
        env = agent_environment(tuple(granted), parent)
        user_home = (os.environ if parent is None else parent).get("HOME")
        if user_home and home_files:
            copy_home_files(Path(user_home), self.home, home_files)
        env.update(
            {
                "HOME": str(self.home),
                "TMPDIR": str(self.tmp),
                "PARALLAX_TASK": self.task,
                "PARALLAX_WORKTREE": str(self.path),
                "PARALLAX_PORT_BASE": str(self.ports[0]),
                "PARALLAX_PORT_COUNT": str(self.ports[1] - self.ports[0]),
                # No __pycache__: a stale .pyc (same size, same second) would hide an edit from
                # the tests, and compiled files are not the task's work.
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        return env


@dataclass(frozen=True)
class Finished:
    commit: str | None
    changed: tuple[str, ...]
    outside: tuple[str, ...]  # changed paths outside the write set (the task fails when any)


def workspaces_root(repo: git.Checkout, environ: Mapping[str, str] | None = None) -> Path:
    """Where runs' worktrees live: `PARALLAX_WORKTREES`, else `.parallax/` at the repository's
    top level (created, and marked ignored by git, here)."""
    configured = (os.environ if environ is None else environ).get("PARALLAX_WORKTREES", "").strip()
    if configured:
        root = Path(configured)
        if not root.is_absolute():
            raise UserError(f"PARALLAX_WORKTREES={configured!r}: give an absolute path")
        if ".git" in root.parts:
            raise UserError(f"PARALLAX_WORKTREES={configured!r}: not inside a .git directory (agents refuse it)")
        return root
    return ensure_folder(repo.work_tree / PRIVATE_DIR_NAME)


def copy_home_files(source: Path, home: Path, files: Sequence[str]) -> list[str]:
    """Copy the regular files among `files` (relative paths) from `source` to `home`; what was
    copied. A missing file is skipped (the tool then says what it lacks)."""
    copied = []
    for relative in files:
        origin = source / relative
        if Path(relative).is_absolute() or ".." in Path(relative).parts or not origin.is_file():
            continue
        target = home / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(origin.read_bytes())
        copied.append(relative)
    return copied


def _owned(path: str, globs: Sequence[str]) -> bool:
    first = path.split("/", 1)[0]
    return any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(first, g) for g in globs)


class Workspaces:
    def __init__(self, repo: git.Checkout, run_id: str, common_dir: Path, root: Path | None = None) -> None:
        self.repo = repo
        self.run_id = run_id
        self.common_dir = common_dir
        self.root = (root or workspaces_root(repo)) / "runs" / run_id
        self.integration_branch = f"parallax/{run_id}/integration"
        self.integration_path = self.root / "integration"

    @classmethod
    async def open(cls, path: Path, run_id: str) -> Workspaces:
        repo = await git.open_repository(path)
        return cls(repo, run_id, await git.common_dir(repo))

    def branch(self, task: str) -> str:
        return f"parallax/{self.run_id}/{task}"

    def worktree(self, task: str) -> Path:
        return self.root / "worktrees" / task

    async def integration_head(self) -> str:
        """The integration branch's head, creating it at the repository's HEAD the first time."""
        if not await git.ref_exists(self.repo, self.integration_branch):
            created = await git.git(
                self.repo, "branch", self.integration_branch, await git.head(self.repo), check=False
            )
            if created.code != 0 and not await git.ref_exists(self.repo, self.integration_branch):
                raise git.GitError(f"cannot create {self.integration_branch}: {created.err.strip()}")
        return await git.head(self.repo, self.integration_branch)

    async def prepare(self, spec: TaskSpec, index: int, dep_commits: Sequence[str]) -> Workspace:
        path = self.worktree(spec.id)
        base = dep_commits[0] if dep_commits else await self.integration_head()
        async with _repo_lock(self.repo.git_dir):  # git's worktree bookkeeping is not safe to run concurrently
            checkout = await git.add_worktree(self.repo, path, self.branch(spec.id), base)
        for commit in dep_commits[1:]:
            conflict = await git.merge(checkout, commit, f"parallax handoff into {spec.id}")
            if conflict is not None:
                raise HandoffConflict(spec.id, conflict)
        base = await git.head(checkout)
        home, tmp = self.root / "home" / spec.id, self.root / "tmp" / spec.id
        for folder in (home, tmp):
            await asyncio.to_thread(remove_tree, folder)
            folder.mkdir(parents=True)
        # A git identity of its own in the task's HOME: a tool that finds none (aider) writes one
        # into the repository's shared .git/config, and two at once then crash on its lock.
        (home / ".gitconfig").write_text(
            f"[user]\n\tname = Parallax task {spec.id}\n\temail = {spec.id}@tasks.parallax.invalid\n"
        )
        first = FIRST_PORT + (index % 400) * PORTS_PER_TASK
        workspace = Workspace(spec.id, checkout, self.branch(spec.id), base, home, tmp, (first, first + PORTS_PER_TASK))
        shared = path / git.PRIVATE
        if shared.is_symlink() or (shared.exists() and not shared.is_dir()):
            await asyncio.to_thread(remove_tree, shared)  # snapshots go into a real folder, never through a link
        for peer in spec.peers:
            source = self.worktree(peer)
            if source.exists():
                workspace.peers[peer] = await asyncio.to_thread(snapshot, source, path / git.PRIVATE / peer)
        return workspace

    async def finish(
        self, workspace: Workspace, spec: TaskSpec, message: str, own_paths: Sequence[str] = ()
    ) -> Finished:
        """Check the task's changes against its write set and commit them. New files matching
        `own_paths` (the tool's history and caches) are removed first: they are not its work."""
        changed = tuple(await git.changed_paths(workspace.checkout, workspace.base))
        if own_paths:
            owned = [
                p
                for p in changed
                if _owned(p, own_paths) and not await git.exists_at(workspace.checkout, workspace.base, p)
            ]
            for path in owned:
                await asyncio.to_thread(remove_tree, workspace.path / path)
            changed = tuple(p for p in changed if p not in owned)
        outside = tuple(p for p in changed if not in_write_set(p, spec.writes))
        if outside:
            return Finished(None, changed, outside)
        commit = await git.commit_all(workspace.checkout, message)
        return Finished(commit or await git.head(workspace.checkout), changed, ())

    async def integration_worktree(self) -> git.Checkout:
        await self.integration_head()
        async with _repo_lock(self.repo.git_dir):
            return await git.attach_worktree(self.repo, self.integration_path, self.integration_branch)

    async def cleanup(self) -> None:
        """Remove the worktrees (the branches stay, so every task's work can still be seen)."""
        worktrees = self.root / "worktrees"
        if worktrees.exists():
            async with _repo_lock(self.repo.git_dir):
                for path in worktrees.iterdir():
                    await git.remove_worktree(self.repo, path)
