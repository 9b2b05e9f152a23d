"""The sandbox runtime: an agent's process in its own mount, pid, ipc, uts and (unless the task
allows it) network namespaces, through bubblewrap.

Inside: the system (/usr, /etc) read-only, the task's worktree writable, its `.shared/` peers
read-only, its HOME writable, a private /tmp, /proc of its own pid namespace only, and no
network but its own loopback. It holds when Parallax runs as root: the process runs in a new
user namespace as uid 1000 (so it has no capability over the host's mounts) and the root is
remounted read-only, because a root process with capabilities could otherwise remount host paths
writable. Without bubblewrap, asking for the sandbox is an error, never a silent fallback.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from parallax.core.errors import AgentFailed

INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


@dataclass(frozen=True)
class Sandbox:
    worktree: Path
    home: Path
    network: bool = False
    read_only: tuple[Path, ...] = ()  # extra host paths to see read-only (a tool outside /usr)

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        bwrap = shutil.which("bwrap", path=env.get("PATH"))
        if bwrap is None:
            raise AgentFailed(
                f"the task asks for the sandbox, but bwrap is not on PATH: {INSTALL_HINT}", retryable=False
            )
        args = [
            bwrap,
            "--unshare-user", "--uid", "1000", "--gid", "1000",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            root = Path("/") / name
            if root.is_symlink():
                args += ["--symlink", str(root.readlink()), str(root)]
            elif root.is_dir():
                args += ["--ro-bind", str(root), str(root)]
        args += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        if not self.network:
            args.append("--unshare-net")
        for path in self.read_only:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(self.worktree), str(self.worktree), "--bind", str(self.home), str(self.home)]
        shared = self.worktree / ".shared"
        if shared.is_dir():
            args += ["--ro-bind", str(shared), str(shared)]
        args += ["--remount-ro", "/", "--setenv", "TMPDIR", "/tmp", "--chdir", str(self.worktree), "--", *argv]
        return args
