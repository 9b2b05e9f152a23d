"""Read-only peering: a filtered snapshot of another task's worktree, at `.shared/<task>`.

The peer may be running while it is copied and its files are not trusted. Guarantees:

- Only directories and regular files with a single link are copied. Symlinks are never followed
  nor copied, whatever they point at; hard-linked files (`st_nlink > 1`: the other name may be a
  secret anywhere on the filesystem) are skipped; special files (fifos, sockets, devices) are
  skipped without being opened (opening a fifo would block). Each skip is counted by reason
  (`Snapshot.skipped`), as is anything that vanished or could not be read mid-copy.
- A file is opened relative to its already-open directory with O_NOFOLLOW | O_NONBLOCK, then
  checked again on the open descriptor (fstat: a regular file with one link), so swapping it
  for a link, a fifo or a hard link after it was listed gains nothing.
- Names in EXCLUDED are skipped at any depth, matched case-insensitively (`.ENV`, `ID_RSA`,
  `Foo.PEM`): secrets and credentials (env files, private keys and keystores, cloud, cluster,
  registry and package-index credentials, Terraform state, password databases), VCS data,
  dependency folders and per-tool folders. A name that says it holds secrets is excluded even
  when it is code (`secrets.py`, `credentials.ts`): the peer then sees less, never more.
- Depth is unbounded: every operation is relative to an open directory descriptor (no path
  grows with depth, so PATH_MAX does not bite) and the walk keeps its own stack (no recursion).
  At most one directory per tree is open besides the roots; going back up opens `..` and checks
  it is the directory it came from (device and inode), else finds its way down again from the
  root by name, giving up (counted) on what moved away.
- The snapshot is read-only (files 0444, directories 0555), so an agent cannot write through it
  by accident; they are copies, so writing them could not reach the peer anyway.

`make_writable` and `remove_tree` (which replacing a snapshot uses) walk the same way: any
depth, and never through a symlink, not even at the top.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

EXCLUDED = (
    # environment files and generic secrets
    ".env", ".env.*", "*.env", ".envrc", "secrets", "secrets.*", ".secrets", "*.secret", "*.secrets",
    "credentials", "credentials.*", "*.credentials", ".git-credentials", "service-account.json",
    "*service-account*.json", "*service_account*.json",
    # private keys, certificates with keys, keystores, password databases
    "*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk", "*.kdbx", "id_rsa*", "id_dsa*",
    "id_ecdsa*", "id_ed25519*",
    # per-service credential files
    ".npmrc", ".yarnrc", ".yarnrc.yml", ".pypirc", ".netrc", "_netrc", ".htpasswd", ".pgpass", ".my.cnf",
    ".s3cfg", ".boto", ".dockercfg", "kubeconfig", "*.kubeconfig", ".vault-token", ".terraformrc",
    "terraform.rc", "*.tfstate", "*.tfstate.*", "*.tfvars",
    # credential folders
    ".ssh", ".gnupg", ".aws", ".azure", ".gcloud", ".kube", ".docker", ".config", ".terraform", ".vagrant",
    # VCS data, dependencies, peers' own snapshots, per-tool folders
    ".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".shared", ".claude", ".codex",
    ".cursor", ".vscode", ".idea", ".gemini", ".aider*",
)  # fmt: skip

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024

Ident = tuple[int, int]  # (st_dev, st_ino): which directory a descriptor is


@dataclass(frozen=True)
class Snapshot:
    path: Path
    files: int  # regular files copied
    skipped_symlinks: int
    excluded: int  # entries skipped by name (a folder counts once)
    skipped_hardlinks: int = 0
    skipped_special: int = 0  # fifos, sockets, devices
    skipped_unreadable: int = 0  # vanished, changed or unreadable while being copied

    @property
    def skipped(self) -> dict[str, int]:
        """Every skip by reason, for a record."""
        return {
            "symlinks": self.skipped_symlinks,
            "excluded": self.excluded,
            "hardlinks": self.skipped_hardlinks,
            "special": self.skipped_special,
            "unreadable": self.skipped_unreadable,
        }


def excluded(name: str, patterns: tuple[str, ...] = EXCLUDED) -> bool:
    """Whether `name` matches one of `patterns`, case-insensitively."""
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def _ident(fd: int) -> Ident:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _open_dirs(parents: tuple[int, ...], name: str, want: tuple[Ident, ...] | None = None) -> tuple[int, ...] | None:
    """`name` opened as a directory (never through a symlink) in each parent, or None (nothing
    left open) when one cannot be, or is not the directory `want` says."""
    opened: list[int] = []
    try:
        for i, parent in enumerate(parents):
            opened.append(os.open(name, _DIR, dir_fd=parent))
            if want is not None and _ident(opened[-1]) != want[i]:
                _close(tuple(opened))
                return None
    except OSError:
        _close(tuple(opened))
        return None
    return tuple(opened)


@dataclass
class _Level:
    name: str
    ids: tuple[Ident, ...]
    pending: list[str] = field(default_factory=list[str])  # subdirectories still to visit


class _Walk:
    """A depth-first walk down one or more parallel trees (a source and its copy) that holds open
    only the current directory of each (plus the roots), however deep the trees go."""

    def __init__(self, roots: tuple[int, ...]) -> None:
        self.roots = roots
        self.fds = roots
        self.levels = [_Level("", tuple(_ident(fd) for fd in roots))]
        self.lost = 0  # subdirectories given up on because a directory above them moved away

    def enter(self, name: str, fds: tuple[int, ...]) -> None:
        self._release()
        self.fds = fds
        self.levels.append(_Level(name, tuple(_ident(fd) for fd in fds)))

    def leave(self) -> str | None:
        """Back up to the parent. Returns the name of the directory left, or None when the walk
        had to find its place again (that directory is no longer where it was)."""
        name: str | None = self.levels.pop().name
        if len(self.levels) == 1:
            parents: tuple[int, ...] | None = self.roots
        else:
            parents = _open_dirs(self.fds, "..", self.levels[-1].ids)
        if parents is None:
            parents, name = self._reopen(), None
        self._release()
        self.fds = parents
        return name

    def _reopen(self) -> tuple[int, ...]:
        """The deepest level still where it was, opened again from the roots by name."""
        fds = self.roots
        for depth in range(1, len(self.levels)):
            deeper = _open_dirs(fds, self.levels[depth].name, self.levels[depth].ids)
            if deeper is None:
                self.lost += sum(1 + len(level.pending) for level in self.levels[depth:])
                del self.levels[depth:]
                break
            if fds is not self.roots:
                _close(fds)
            fds = deeper
        return fds

    def _release(self) -> None:
        if self.fds is not self.roots:
            _close(self.fds)
        self.fds = self.roots

    def close(self) -> None:
        self._release()


def _depth_first(
    roots: tuple[int, ...],
    visit: Callable[[tuple[int, ...]], list[str]],
    on_leave: Callable[[tuple[int, ...], str], None] | None = None,
    on_blocked: Callable[[tuple[int, ...], str], bool] | None = None,
) -> int:
    """Visit every directory under `roots` (parallel trees): `visit(fds)` handles one directory
    and returns its subdirectories to go down into; `on_leave(parent_fds, name)` runs when one is
    done; `on_blocked(parent_fds, name)` runs when one cannot be opened, and says whether to try
    once more. Returns how many subdirectories were not visited."""
    walk = _Walk(roots)
    lost = 0
    try:
        walk.levels[-1].pending = visit(walk.fds)
        while True:
            level = walk.levels[-1]
            if not level.pending:
                if len(walk.levels) == 1:
                    return lost + walk.lost
                name = walk.leave()
                if name is not None and on_leave is not None:
                    on_leave(walk.fds, name)
                continue
            name = level.pending.pop()
            fds = _open_dirs(walk.fds, name)
            if fds is None and on_blocked is not None and on_blocked(walk.fds, name):
                fds = _open_dirs(walk.fds, name)
            if fds is None:
                lost += 1
                continue
            walk.enter(name, fds)
            walk.levels[-1].pending = visit(fds)
    finally:
        walk.close()


@dataclass
class _Counts:
    files: int = 0
    symlinks: int = 0
    excluded: int = 0
    hardlinks: int = 0
    special: int = 0
    unreadable: int = 0


def _pour(reader: int, writer: int) -> bool:
    """Copy `reader` to its end into `writer`; False if reading failed part way."""
    while True:
        try:
            chunk = os.read(reader, _CHUNK)
        except OSError:
            return False
        if not chunk:
            return True
        view = memoryview(chunk)
        while view:
            view = view[os.write(writer, view) :]


def _copy_file(src: int, dst: int, name: str, counts: _Counts) -> None:
    try:
        reader = os.open(name, _FILE, dir_fd=src)
    except OSError:  # gone, swapped for a symlink (ELOOP), unreadable
        counts.unreadable += 1
        return
    try:
        st = os.fstat(reader)  # what was opened, not what was listed
        if not stat.S_ISREG(st.st_mode):
            counts.special += 1
            return
        if st.st_nlink != 1:
            counts.hardlinks += 1
            return
        writer = os.open(name, _NEW_FILE, 0o600, dir_fd=dst)
        try:
            whole = _pour(reader, writer)
            if whole:
                os.fchmod(writer, 0o444)
        finally:
            os.close(writer)
        if not whole:
            os.unlink(name, dir_fd=dst)
            counts.unreadable += 1
            return
        counts.files += 1
    finally:
        os.close(reader)


def _copy_directory(fds: tuple[int, ...], patterns: tuple[str, ...], counts: _Counts) -> list[str]:
    src, dst = fds
    subdirectories: list[str] = []
    for name in os.listdir(src):
        try:
            st = os.stat(name, dir_fd=src, follow_symlinks=False)
        except OSError:
            counts.unreadable += 1
            continue
        if stat.S_ISLNK(st.st_mode):
            counts.symlinks += 1
        elif excluded(name, patterns):
            counts.excluded += 1
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            subdirectories.append(name)
        elif not stat.S_ISREG(st.st_mode):
            counts.special += 1  # never opened
        elif st.st_nlink != 1:
            counts.hardlinks += 1
        else:
            _copy_file(src, dst, name, counts)
    # Every entry of this directory exists now: it can be read-only before its subdirectories
    # are filled (they stay reachable, and writable until their own turn).
    os.fchmod(dst, 0o555)
    return subdirectories


def snapshot(source: Path, target: Path, patterns: tuple[str, ...] = EXCLUDED) -> Snapshot:
    """Copy `source` into `target` (replaced if present) under the rules above."""
    if os.path.lexists(target):
        remove_tree(target)
    target.mkdir(parents=True)
    lowered = tuple(p.lower() for p in patterns)
    counts = _Counts()
    roots: list[int] = []
    try:
        roots.append(os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        roots.append(os.open(target, _DIR))

        def vanished(fds: tuple[int, ...], name: str) -> bool:  # its copy stays, empty and read-only
            with contextlib.suppress(OSError):
                os.chmod(name, 0o555, dir_fd=fds[1])
            return False

        counts.unreadable += _depth_first(
            (roots[0], roots[1]), lambda fds: _copy_directory(fds, lowered, counts), on_blocked=vanished
        )
    finally:
        _close(tuple(roots))
    return Snapshot(
        target, counts.files, counts.symlinks, counts.excluded, counts.hardlinks, counts.special, counts.unreadable
    )


def _writable(fd: int, name: str, mode: int, bits: int) -> None:
    """Add `bits` to the mode of `name` in `fd` without following a symlink when it can be opened."""
    try:
        opened = os.open(name, _FILE, dir_fd=fd)
    except PermissionError:
        os.chmod(name, stat.S_IMODE(mode) | bits, dir_fd=fd)  # it was listed as a regular file just now
        return
    except OSError:
        return
    try:
        st = os.fstat(opened)
        if stat.S_ISREG(st.st_mode):
            os.fchmod(opened, stat.S_IMODE(st.st_mode) | bits)
    finally:
        os.close(opened)


def _make_directory_writable(fds: tuple[int, ...]) -> list[str]:
    (fd,) = fds
    mode = os.fstat(fd).st_mode
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        os.fchmod(fd, stat.S_IMODE(mode) | stat.S_IRWXU)
    subdirectories: list[str] = []
    for name in os.listdir(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            subdirectories.append(name)
        elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o600 != 0o600:
            _writable(fd, name, st.st_mode, 0o600)
    return subdirectories


def _let_in(fds: tuple[int, ...], name: str) -> bool:
    """A directory its owner cannot open (mode 0o000, say): give the owner its bits back."""
    try:
        st = os.stat(name, dir_fd=fds[0], follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            return False
        os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_IRWXU, dir_fd=fds[0])
    except OSError:
        return False
    return True


def _open_top(path: Path) -> int | None:
    """`path` opened as a directory, never through a symlink; None if it is not one."""
    try:
        return os.open(path, _DIR)
    except PermissionError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            return None
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        return os.open(path, _DIR)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink
            return None
        raise


def make_writable(path: Path) -> None:
    """Give the owner write access again (directories u+rwx, regular files u+rw; other bits are
    kept) throughout `path`, so a snapshot, or a worktree holding them, can be replaced or removed.
    Symlinks are neither followed nor changed; a missing `path` is left alone."""
    top = _open_top(path)
    if top is None:
        return
    try:
        _depth_first((top,), _make_directory_writable, on_blocked=_let_in)
    finally:
        os.close(top)


def _empty_directory(fds: tuple[int, ...]) -> list[str]:
    (fd,) = fds
    mode = os.fstat(fd).st_mode
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        os.fchmod(fd, stat.S_IMODE(mode) | stat.S_IRWXU)
    subdirectories: list[str] = []
    for name in os.listdir(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                subdirectories.append(name)
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
    return subdirectories


def _remove_directory(fds: tuple[int, ...], name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=fds[0])


def remove_tree(path: Path) -> None:
    """Remove `path` and everything under it, at any depth and whatever its modes, never
    following a symlink (a symlink at `path` itself is removed, not what it points at)."""
    top = _open_top(path)
    if top is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    try:
        _depth_first((top,), _empty_directory, on_leave=_remove_directory, on_blocked=_let_in)
    finally:
        os.close(top)
    os.rmdir(path)
