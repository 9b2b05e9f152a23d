"""Read-only peering: a filtered snapshot of another task's worktree, at `.shared/<task>`.

What is copied: regular files and directories only. Symlinks are never followed nor copied
(skipped and counted), whatever they point at. Secrets, VCS data, dependency folders and
per-tool folders are excluded by name at any depth. The snapshot's files are made read-only
(0444, directories 0555), so an agent cannot write through it by accident, and they are copies,
so writing them could not reach the peer anyway.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

EXCLUDED = (
    ".env", ".env.*", "*.env", ".envrc", "credentials.json", "service-account.json", "*.pem", "id_rsa*", "id_ed25519*",
    ".npmrc", ".pypirc", ".netrc", ".htpasswd", ".pgpass", ".git", ".hg", ".svn", "node_modules", ".venv", "venv",
    "__pycache__", ".shared", ".claude", ".codex", ".cursor", ".vscode", ".idea", ".docker", ".config", ".aws",
    ".ssh", ".gnupg", ".kube",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    path: Path
    files: int
    skipped_symlinks: int
    excluded: int


def excluded(name: str, patterns: tuple[str, ...] = EXCLUDED) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def snapshot(source: Path, target: Path, patterns: tuple[str, ...] = EXCLUDED) -> Snapshot:
    """Copy `source` into `target` (replaced if present) under the rules above."""
    if target.exists():
        make_writable(target)
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files = symlinks = skipped = 0
    stack = [(source, target)]
    while stack:
        src_dir, dst_dir = stack.pop()
        with os.scandir(src_dir) as entries:
            for entry in entries:
                if entry.is_symlink():
                    symlinks += 1
                    continue
                if excluded(entry.name, patterns):
                    skipped += 1
                    continue
                dst = dst_dir / entry.name
                if entry.is_dir(follow_symlinks=False):
                    dst.mkdir()
                    stack.append((Path(entry.path), dst))
                elif entry.is_file(follow_symlinks=False):
                    # O_NOFOLLOW: the file cannot have been swapped for a link since it was listed.
                    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as reader, open(dst, "wb") as writer:
                        shutil.copyfileobj(reader, writer)
                    os.chmod(dst, 0o444)
                    files += 1
    for dirpath, dirnames, _ in os.walk(target, topdown=False):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(target, 0o555)
    return Snapshot(target, files, symlinks, skipped)


def make_writable(path: Path) -> None:
    """Undo the read-only modes of a snapshot so it can be replaced or removed."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chmod(dirpath, stat.S_IRWXU)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IRUSR | stat.S_IWUSR)
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IRWXU)
