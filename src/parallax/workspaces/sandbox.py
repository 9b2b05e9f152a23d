"""The sandbox runtime: an agent's process in its own mount, pid, ipc, uts and (unless the task
allows it) network namespaces, through bubblewrap.

Inside: /usr read-only, an allow-list of /etc read-only (`ETC_ALLOWED`: what programs need
to run, resolve names and check certificates; never shadow, gshadow, sudoers, ssh host keys,
/etc/ssl/private or package-manager credentials), the task's worktree writable (read-only for a
verify over finished work), its `.git` pointer read-only, its `.shared/` peers read-only, its HOME
writable, a private /tmp, /proc of its own pid namespace only, and no network but its own
loopback. It holds when Parallax runs as root: the process runs in a new user namespace as uid
1000 (so it has no capability over the host's mounts) and the root is remounted read-only,
because a root process with capabilities could otherwise remount host paths writable. The uid
inside still maps to the host's root, which is why /etc is an allow-list rather than a bind.
Without bubblewrap, asking for the sandbox is an error, never a silent fallback.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from parallax.core.errors import AgentFailed

INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


# Entries of /etc a sandboxed program may see (glob patterns of paths relative to /etc).
ETC_ALLOWED = (
    "passwd", "group", "hostname", "hosts", "host.conf", "nsswitch.conf", "resolv.conf", "gai.conf",
    "protocols", "services", "rpc", "networks", "localtime", "timezone", "locale.alias", "locale.conf",
    "default/locale", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "os-release", "lsb-release",
    "debian_version", "shells", "profile", "bash.bashrc", "inputrc", "mime.types", "magic",
    "mailcap", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf", "pki/tls/certs",
    "pki/ca-trust", "crypto-policies", "fonts", "xdg", "java-*", "python3*", "perl", "vim", "terminfo",
)  # fmt: skip


def etc_entries(root: Path = Path("/etc")) -> list[Path]:
    """The existing paths under `root` that ETC_ALLOWED lets in, in a stable order."""
    found: list[Path] = []
    for pattern in ETC_ALLOWED:
        parent, _, name = pattern.rpartition("/")
        folder = root / parent if parent else root
        if not folder.is_dir():
            continue
        if any(ch in name for ch in "*?["):
            found += sorted(p for p in folder.iterdir() if fnmatch.fnmatchcase(p.name, name))
        elif (folder / name).exists():
            found.append(folder / name)
    return found


@dataclass(frozen=True)
class Sandbox:
    worktree: Path
    home: Path
    network: bool = False
    read_only: tuple[Path, ...] = ()  # extra host paths to see read-only (a tool outside /usr)
    worktree_writable: bool = True  # False: a verify over finished work sees it read-only

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
        for path in etc_entries():
            args += ["--ro-bind", str(path), str(path)]  # a symlink's target is bound (resolved on the host)
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        if not self.network:
            args.append("--unshare-net")
        for path in self.read_only:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind" if self.worktree_writable else "--ro-bind", str(self.worktree), str(self.worktree)]
        args += ["--bind", str(self.home), str(self.home)]
        dot_git = self.worktree / ".git"
        if dot_git.is_file() and not dot_git.is_symlink():
            args += ["--ro-bind", str(dot_git), str(dot_git)]  # its pointer to the git dir is Parallax's
        shared = self.worktree / ".shared"
        if shared.is_dir():
            args += ["--ro-bind", str(shared), str(shared)]
        args += ["--remount-ro", "/", "--setenv", "TMPDIR", "/tmp", "--chdir", str(self.worktree), "--", *argv]
        return args
