"""The folder Parallax keeps its own files in: `.parallax/` under the project root (the default
store, the server's admin token).

Guarantee: a `.parallax/` folder that Parallax creates or writes into holds a `.gitignore` of
`*`, so git ignores the whole folder (that file included) and `git add -A` in the repository
never stages the store or the admin token. A new folder is created 0700: the token is a shell on
the server.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR_NAME = ".parallax"
_IGNORE_ALL = "# Parallax's own files (store, tokens): never committed.\n*\n"


def ensure_folder(folder: Path) -> Path:
    """Create `folder` (and its parents); when it is a `.parallax` folder, make git ignore it."""
    if folder.name != PRIVATE_DIR_NAME:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):  # a read-only folder still works; it is just not marked
            fd = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as handle:
                handle.write(_IGNORE_ALL)
    return folder
