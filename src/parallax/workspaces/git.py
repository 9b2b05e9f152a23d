"""Git, as the workspaces use it: worktrees per task, what a task changed, commits, merges with
every conflict reported. Everything runs the real `git` binary (no library between us and the
repository), with a fixed identity.

Host-side git never trusts a task's worktree. Git runs configuration as code (fsmonitor, hooks,
external diff, pagers, editors, credential helpers, ssh commands), and an agent controls every
file in its worktree and HOME. So every call here:

- addresses the git dir and work tree Parallax recorded (`--git-dir`, `--work-tree`), never
  discovered from the current directory, so a rewritten `.git` file is not followed (and
  `Checkout.check_pointer` refuses a worktree whose `.git` file changed);
- reads no global, XDG or system configuration (`GIT_CONFIG_GLOBAL=/dev/null`,
  `GIT_CONFIG_NOSYSTEM=1`, HOME and XDG_CONFIG_HOME pointing at an empty directory of ours),
  so a `.gitconfig` written into (or tracked at the root of) a worktree is never read;
- overrides every configuration key that makes git execute something (`SAFE_CONFIG`) on the
  command line, which beats the repository's own config and reaches every git process git
  starts itself (it travels in GIT_CONFIG_PARAMETERS), and runs no hooks (`core.hooksPath`
  points at an empty directory);
- passes `--no-ext-diff --no-textconv` to diffs and ignores submodules, so nothing in
  `.gitattributes` or a nested repository runs either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from parallax.core.errors import UserError
from parallax.workspaces.peering import remove_tree

_IDENTITY = {
    "GIT_AUTHOR_NAME": "parallax",
    "GIT_AUTHOR_EMAIL": "parallax@localhost",
    "GIT_COMMITTER_NAME": "parallax",
    "GIT_COMMITTER_EMAIL": "parallax@localhost",
}

# Keys whose value git executes (or that make it execute something), set to harmless values.
# `-c` on the command line wins over every configuration file, including the repository's.
SAFE_CONFIG = (
    "core.fsmonitor=false",
    "core.hooksPath={empty}",
    "core.sshCommand=false",
    "core.gitProxy=",
    "core.askPass=",
    "core.editor=true",
    "core.pager=cat",
    "core.alternateRefsCommand=",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "core.untrackedCache=false",
    "credential.helper=",
    "diff.external=",
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "submodule.recurse=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gpg.program=false",
    "sequence.editor=true",
    "protocol.allow=never",
    "protocol.file.allow=never",
    "uploadpack.packObjectsHook=",
    "safe.bareRepository=explicit",
)

_empty_dir: Path | None = None


def empty_dir() -> Path:
    """An empty, read-only directory of ours: git's HOME, XDG_CONFIG_HOME and hooks path."""
    global _empty_dir
    if _empty_dir is None or not _empty_dir.is_dir() or any(_empty_dir.iterdir()):
        path = Path(tempfile.mkdtemp(prefix="parallax-git-"))
        path.chmod(0o555)
        _empty_dir = path
    return _empty_dir


class GitError(UserError):
    """A git command failed; the message holds the command and git's own words."""


class WorktreeTampered(GitError):
    """A task's worktree no longer points at the git dir Parallax made for it."""


@dataclass(frozen=True)
class GitResult:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Checkout:
    """A git dir and the work tree it belongs to, as Parallax recorded them. `pointer` is the
    content of the work tree's `.git` file when Parallax created it (None for the repository
    itself, whose `.git` is a directory the user owns)."""

    git_dir: Path
    work_tree: Path
    pointer: str | None = None

    def check_pointer(self) -> None:
        """Raise WorktreeTampered unless the work tree's `.git` is still the file Parallax wrote."""
        if self.pointer is None:
            return
        dot_git = self.work_tree / ".git"
        try:
            fd = os.open(dot_git, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise WorktreeTampered(f"{dot_git} was removed or replaced ({e.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise WorktreeTampered(f"{dot_git} is no longer a file")
            content = handle.read(64 * 1024).decode(errors="replace")
        if content != self.pointer:
            raise WorktreeTampered(f"{dot_git} was changed to point somewhere else; the task's work is refused")


def _environment() -> dict[str, str]:
    home = str(empty_dir())
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env.update(_IDENTITY)
    env.update(
        {
            "HOME": home,
            "XDG_CONFIG_HOME": home,
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PAGER": "cat",
            "GIT_EDITOR": "true",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_OPTIONAL_LOCKS": "0",
        }
    )
    return env


def _safe_config() -> list[str]:
    empty = str(empty_dir())
    out: list[str] = []
    for item in SAFE_CONFIG:
        out += ["-c", item.replace("{empty}", empty)]
    return out


async def git(where: Checkout, *args: str, check: bool = True, stdin: bytes | None = None) -> GitResult:
    """Run `git ARGS` on the recorded git dir and work tree, under the rules above."""
    argv = ["git", f"--git-dir={where.git_dir}", f"--work-tree={where.work_tree}", *_safe_config(), *args]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=where.work_tree,
        env=_environment(),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    result = GitResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and result.code != 0:
        detail = (result.err or result.out).strip().splitlines()
        raise GitError(f"git {' '.join(args)} (in {where.work_tree}) failed: {detail[-1] if detail else result.code}")
    return result


async def open_repository(path: Path) -> Checkout:
    """The repository containing `path` (the user's own, so found the ordinary way, once),
    with its absolute git dir and top level recorded for every later call."""
    argv = ["git", *_safe_config(), "rev-parse", "--absolute-git-dir", "--show-toplevel"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=path,
        env=_environment(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise UserError(f"{path} is not inside a git repository (with a work tree)")
    return Checkout(Path(lines[0]), Path(lines[1]))


async def common_dir(repo: Checkout) -> Path:
    common = Path((await git(repo, "rev-parse", "--git-common-dir")).out.strip())
    return common if common.is_absolute() else (repo.work_tree / common).resolve()


async def head(where: Checkout, ref: str = "HEAD") -> str:
    return (await git(where, "rev-parse", "--verify", f"{ref}^{{commit}}")).out.strip()


async def ref_exists(where: Checkout, ref: str) -> bool:
    return (await git(where, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)).code == 0


async def exists_at(where: Checkout, ref: str, path: str) -> bool:
    """Whether `path` is in the tree of `ref`."""
    return (await git(where, "cat-file", "-e", f"{ref}:{path}", check=False)).code == 0


async def tracked_files(where: Checkout, ref: str = "HEAD") -> list[str]:
    out = await git(where, "ls-tree", "-r", "--name-only", "-z", ref)
    return [f for f in out.out.split("\0") if f]


def _read_pointer(worktree: Path) -> tuple[Path, str]:
    content = (worktree / ".git").read_text()
    if not content.startswith("gitdir: "):
        raise GitError(f"{worktree}/.git is not a worktree pointer")
    git_dir = Path(content.removeprefix("gitdir: ").strip())
    return (git_dir if git_dir.is_absolute() else (worktree / git_dir).resolve()), content


async def add_worktree(repo: Checkout, worktree: Path, branch: str, base: str) -> Checkout:
    """A new worktree at `worktree` on a new branch `branch` starting at `base` (replacing a
    branch and folder left by an earlier attempt, and repairing what an interrupted `worktree
    add` left locked). Its git dir is read from the `.git` file git has just written, before any
    agent ran there, and recorded."""
    await remove_worktree(repo, worktree)
    worktree.parent.mkdir(parents=True, exist_ok=True)
    await git(repo, "worktree", "add", "--force", "-B", branch, str(worktree), base)
    git_dir, pointer = _read_pointer(worktree)
    return Checkout(git_dir, worktree, pointer)


async def attach_worktree(repo: Checkout, worktree: Path, branch: str) -> Checkout:
    """A worktree of an existing `branch` (the integration branch), created if missing, or
    made again if a `worktree add` was interrupted (killed) while making it."""
    if (worktree / ".git").is_file():
        try:
            git_dir, pointer = _read_pointer(worktree)
        except (GitError, OSError):  # killed while git was writing it: half made
            git_dir, pointer = worktree / "missing", ""
        # git locks the entry ("initializing") until the checkout is complete: one still locked
        # is half made (its HEAD does not resolve), and is replaced like a missing one.
        if git_dir.is_dir() and (git_dir / "HEAD").is_file() and not (git_dir / "locked").exists():
            return Checkout(git_dir, worktree, pointer)
    await remove_worktree(repo, worktree)
    worktree.parent.mkdir(parents=True, exist_ok=True)
    await git(repo, "worktree", "add", "--force", str(worktree), branch)
    git_dir, pointer = _read_pointer(worktree)
    return Checkout(git_dir, worktree, pointer)


async def remove_worktree(repo: Checkout, worktree: Path) -> None:
    """Remove a worktree's folder and git's bookkeeping of it. Never asks git to look inside
    the folder (`worktree remove` would read what the agent left there): the folder is deleted
    as files, then stale entries are pruned, including locked ones an interrupted `worktree add`
    left behind."""
    await asyncio.to_thread(remove_tree, worktree)  # at any depth, never following a link; off the loop
    admin = (await common_dir(repo)) / "worktrees"
    if admin.is_dir():
        for entry in admin.iterdir():
            try:
                recorded = (entry / "gitdir").read_text().strip()
            except OSError:
                recorded = ""
            points_at = Path(recorded).parent if recorded else None
            # A lock with no gitdir (or an empty one: killed before git wrote it), or on this very
            # folder, is what a killed `worktree add` leaves.
            if points_at is None or points_at == worktree:
                (entry / "locked").unlink(missing_ok=True)
            # Killed while git was writing `commondir` (the file made, its "../.." not yet in it),
            # an entry makes every later `worktree add -B` die with "failed to read commondir"
            # (git reads each worktree's refs to check the branch is free), whichever worktree
            # it is about. git writes "../.." there for every linked worktree, so writing it is
            # what git would have done: harmless for an add still under way in another process,
            # and it lets this one go on. (The entry is pruned once its own task is made again.)
            commondir = entry / "commondir"
            with contextlib.suppress(OSError):
                if recorded and commondir.exists() and not commondir.read_text().strip():
                    commondir.write_text("../..\n")
    await git(repo, "worktree", "prune")


PRIVATE = ".shared"  # peers' snapshots live here in a worktree and are never part of its work


async def changed_paths(worktree: Checkout, base: str) -> list[str]:
    """Every path that differs from `base`: committed, staged, unstaged and untracked (renames
    count as both their old and new paths); peers' snapshots are not the task's work."""
    worktree.check_pointer()
    paths: set[str] = set()
    diff = await git(
        worktree,
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--no-ext-diff",
        "--no-textconv",
        "--ignore-submodules=all",
        base,
    )
    paths.update(p for p in diff.out.split("\0") if p)
    untracked = await git(worktree, "ls-files", "--others", "--exclude-standard", "-z")
    paths.update(p for p in untracked.out.split("\0") if p)
    return sorted(p for p in paths if p != PRIVATE and not p.startswith(f"{PRIVATE}/"))


async def commit_all(worktree: Checkout, message: str) -> str | None:
    """Commit everything in the worktree; the new commit, or None if nothing changed."""
    worktree.check_pointer()
    await git(worktree, "add", "--all", "--", ".", f":(exclude){PRIVATE}")
    if (await git(worktree, "diff", "--cached", "--quiet", "--no-ext-diff", check=False)).code == 0:
        return None
    await git(worktree, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
    return await head(worktree)


@dataclass(frozen=True)
class MergeConflict:
    files: tuple[str, ...]
    ours: dict[str, str]  # file -> its content on the branch merged into
    theirs: dict[str, str]  # file -> its content on the branch being merged
    message: str


async def merge(worktree: Checkout, commit: str, message: str) -> MergeConflict | None:
    """Merge `commit` into the worktree's branch; on a conflict, record both sides of every
    conflicted file and abort, leaving the branch as it was (never a silent resolution)."""
    worktree.check_pointer()
    result = await git(worktree, "merge", "--no-ff", "--no-edit", "--no-verify", "-m", message, commit, check=False)
    if result.code == 0:
        return None
    unmerged = await git(worktree, "diff", "--name-only", "--diff-filter=U", "-z", "--no-ext-diff", check=False)
    files = tuple(f for f in unmerged.out.split("\0") if f)
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for name in files:
        ours[name] = (await git(worktree, "show", "--no-textconv", f":2:{name}", check=False)).out
        theirs[name] = (await git(worktree, "show", "--no-textconv", f":3:{name}", check=False)).out
    await git(worktree, "merge", "--abort", check=False)
    detail = (result.out + result.err).strip().splitlines()
    return MergeConflict(files, ours, theirs, detail[-1] if detail else "merge failed")


async def diff(repo: Checkout, base: str, commit: str) -> str:
    return (await git(repo, "diff", "--stat", "--patch", "--no-ext-diff", "--no-textconv", base, commit)).out


async def merge_keeping_conflicts(worktree: Checkout, commit: str) -> tuple[tuple[str, ...], str]:
    """Start merging `commit` into the worktree without committing and leave git's conflict
    markers in the conflicted files, for a resolver to edit; then stage every path as it stands.
    Returns the conflicted files and the staged tree (markers and all), so what the resolver
    changes afterwards is `changed_paths(worktree, tree)`; `commit_staged` then makes the
    merge commit (both parents)."""
    worktree.check_pointer()
    result = await git(worktree, "merge", "--no-ff", "--no-commit", "--no-verify", commit, check=False)
    unmerged = await git(worktree, "diff", "--name-only", "--diff-filter=U", "-z", "--no-ext-diff", check=False)
    files = tuple(f for f in unmerged.out.split("\0") if f)
    if result.code != 0 and not files:
        raise GitError(f"merging {commit[:12]} failed: {(result.out + result.err).strip()}")
    await git(worktree, "add", "--all", "--", ".", f":(exclude){PRIVATE}")
    tree = (await git(worktree, "write-tree")).out.strip()
    return files, tree


async def stage_all(worktree: Checkout) -> None:
    worktree.check_pointer()
    await git(worktree, "add", "--all", "--", ".", f":(exclude){PRIVATE}")


async def commit_staged(worktree: Checkout, message: str) -> str:
    """Commit what is staged (finishing a merge in progress: the commit has both parents)."""
    worktree.check_pointer()
    await git(worktree, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "--allow-empty", "-m", message)
    return await head(worktree)


async def fast_forward(worktree: Checkout, commit: str) -> bool:
    """Move the worktree's branch to `commit` if it descends from its head; whether it did."""
    worktree.check_pointer()
    return (await git(worktree, "merge", "--ff-only", "--no-verify", commit, check=False)).code == 0


async def diff_paths(repo: Checkout, base: str, commit: str, paths: Sequence[str]) -> str:
    """The patch from `base` to `commit`, limited to `paths`."""
    args = ["diff", "--patch", "--no-ext-diff", "--no-textconv", base, commit, "--", *(f":(literal){p}" for p in paths)]
    return (await git(repo, *args)).out
