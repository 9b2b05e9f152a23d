"""Item 13, peering: a peer's worktree is hostile. Its snapshot carries no secret (whatever the
case of its name), no symlink, hard link or special file (never opened: a fifo would block),
every skip is counted by reason, and trees of any depth (1,200 levels; paths past PATH_MAX) are
copied, made writable again and removed without recursion or path-length limits."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parallax.workspaces.peering import EXCLUDED, Snapshot, excluded, make_writable, remove_tree, snapshot

SECRET = b"TOP-SECRET"
SECRET_FILES = [
    ".ENV", ".Env.Local", "Prod.ENV", ".EnvRC", "Secrets", "Secrets.YAML", ".Secrets", "api.SECRET", "Credentials",
    "credentials.JSON", "ci.Credentials", ".Git-Credentials", "Service-Account.json", "my-SERVICE-ACCOUNT-key.json",
    "server.KEY", "Foo.PEM", "cert.P12", "cert.PFX", "store.JKS", "release.KeyStore", "putty.PPK", "vault.KDBX",
    "ID_RSA", "id_rsa.PUB", "Id_Dsa", "ID_ECDSA", "id_ED25519", ".NPMRC", ".YarnRC", ".Yarnrc.yml", ".PyPIrc",
    ".NetRC", "_NETRC", ".HTPasswd", ".PGPASS", ".My.Cnf", ".S3CFG", ".BOTO", ".DockerCfg", "KubeConfig",
    "prod.KUBECONFIG", ".Vault-Token", ".TerraformRC", "Terraform.RC", "prod.TFSTATE", "prod.tfstate.BACKUP",
    "prod.TFVARS",
]  # fmt: skip
SECRET_DIRS = [
    ".SSH", ".GnuPG", ".AWS", ".Azure", ".GCloud", ".KUBE", ".Docker", ".Config", ".Terraform", ".Vagrant", ".GIT",
    "Node_Modules", ".Venv", "VENV", "__PYCACHE__", ".Shared", ".Claude", ".Codex", ".Cursor", ".VSCode", ".Idea",
    ".Gemini", ".Aider.tags.cache.v3",
]  # fmt: skip
DEPTH = 1200
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def make_chain(top: Path, names: Iterator[str], files: dict[str, bytes]) -> tuple[str, ...]:
    """A chain of directories below `top` (made relative to open descriptors, so its paths may
    exceed PATH_MAX) with `files` at the bottom; returns the chain's names."""
    top.mkdir()
    made: list[str] = []
    fd = os.open(top, DIR)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, DIR, dir_fd=fd)
            os.close(fd)
            fd = deeper
            made.append(name)
        for name, content in files.items():
            out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, content)
            os.close(out)
    finally:
        os.close(fd)
    return tuple(made)


def tree(root: Path) -> dict[tuple[str, ...], tuple[int, bytes | None]]:
    """Everything under `root` at any depth: relative path -> (lstat mode, content of a regular
    file). Only regular files are opened; a directory is closed once its children are opened."""
    found: dict[tuple[str, ...], tuple[int, bytes | None]] = {}
    stack: list[tuple[tuple[str, ...], int]] = [((), os.open(root, DIR))]
    while stack:
        rel, fd = stack.pop()
        try:
            for name in os.listdir(fd):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                content = None
                if stat.S_ISREG(st.st_mode):
                    reader = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                    content = os.read(reader, 1 << 20)
                    os.close(reader)
                found[(*rel, name)] = (st.st_mode, content)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(((*rel, name), os.open(name, DIR, dir_fd=fd)))
        finally:
            os.close(fd)
    return found


def within(seconds: float, call: Callable[[], Any], unblock: Callable[[], None]) -> Any:
    """`call()` in a thread with a deadline: a call that blocks (on a fifo, say) fails the test
    instead of hanging it; `unblock` then lets the thread finish."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        thread.join(30)
        pytest.fail(f"did not return within {seconds:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    for child in tmp_path.iterdir():  # pytest's own cleanup would recurse past the limit
        remove_tree(child)


@pytest.fixture
def hostile(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: None
) -> Iterator[dict[str, Any]]:
    """A peer's worktree with every kind of secret name in mixed case (at the top and further
    down), hard links, symlinks, a fifo, a unix socket, a device (as root), and per variant:
    "deep" 1,200 nested one-character directories, "long" nested directories whose paths exceed
    PATH_MAX (4096), "flat" neither, "all" both."""
    variant = getattr(request, "param", "all")
    root = tmp_path / "peer"
    (root / "src" / "nested").mkdir(parents=True)
    innocent = {("README.md",): b"readme\n", ("src", "app.py"): b"print('hi')\n", ("src", "id_utils.py"): b"x = 1\n"}
    for rel, content in innocent.items():
        root.joinpath(*rel).write_bytes(content)
    excluded_count = 0
    for folder in (root, root / "src" / "nested"):  # at the top and further down
        for name in SECRET_FILES:
            (folder / name).write_bytes(SECRET)
            excluded_count += 1
        for name in SECRET_DIRS:
            (folder / name).mkdir()
            (folder / name / "inside.txt").write_bytes(SECRET)
            excluded_count += 1

    outside = tmp_path / "outside-secret.txt"
    outside.write_bytes(SECRET)
    os.link(outside, root / "notes.txt")  # a hard link to a secret elsewhere
    (root / "src" / "a.txt").write_bytes(SECRET)
    os.link(root / "src" / "a.txt", root / "src" / "b.txt")  # two names of one file
    (root / "link-out").symlink_to(outside)
    (root / "src" / "link-env").symlink_to(root / ".ENV")
    (root / "link-dir").symlink_to(tmp_path)
    os.mkfifo(root / "pipe")  # opening it for reading would block until a writer comes
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with monkeypatch.context() as m:  # a unix socket's path must be short: bind it relative
        m.chdir(root)
        server.bind("sock")
    special = 2
    if os.geteuid() == 0:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        special += 1

    dirs = {("src",), ("src", "nested")}
    chains = {
        "deep": (chr(ord("a") + i % 26) for i in range(DEPTH)),  # 2,400 bytes of path: recursion alone
        "long": (f"{i:03}" + "L" * 240 for i in range(24)),  # 5,856 bytes of path, past PATH_MAX
    }
    for kind, names in chains.items():
        if variant not in (kind, "all"):
            continue
        chain = make_chain(root / kind, names, {"bottom.txt": kind.encode(), ".Env": SECRET, "Id_Rsa": SECRET})
        excluded_count += 2
        innocent[(kind, *chain, "bottom.txt")] = kind.encode()
        dirs |= {(kind, *chain[:i]) for i in range(len(chain) + 1)}
        if kind == "long":
            assert len(str(root.joinpath(kind, *chain))) > 4096
    try:
        yield {"root": root, "innocent": innocent, "excluded": excluded_count, "special": special, "dirs": dirs}
    finally:
        server.close()


def unblock_fifo(root: Path) -> Callable[[], None]:
    def unblock() -> None:  # a writer comes and goes: a reader blocked in open() gets EOF
        os.close(os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK))

    return unblock


@pytest.mark.parametrize("hostile", ["flat", "deep", "long"], indirect=True)
def test_a_hostile_worktree_yields_its_code_and_nothing_else(hostile: dict[str, Any], tmp_path: Path) -> None:
    root: Path = hostile["root"]
    target = tmp_path / "reader" / ".shared" / "peer"
    shot: Snapshot = within(120, lambda: snapshot(root, target), unblock_fifo(root))

    copied = tree(target)
    files = {rel: content for rel, (mode, content) in copied.items() if stat.S_ISREG(mode)}
    dirs = {rel for rel, (mode, _) in copied.items() if stat.S_ISDIR(mode)}
    assert files == hostile["innocent"]  # the code, at every depth, and nothing else
    assert dirs == hostile["dirs"]
    assert set(copied) == set(files) | dirs  # no symlink, fifo, socket or device
    assert not any(SECRET in content for content in files.values() if content is not None)
    assert all(stat.S_IMODE(mode) == (0o555 if stat.S_ISDIR(mode) else 0o444) for mode, _ in copied.values())
    assert stat.S_IMODE(target.stat().st_mode) == 0o555

    assert shot.path == target
    assert shot.files == len(hostile["innocent"])
    assert shot.skipped_symlinks == 3
    assert shot.excluded == hostile["excluded"]
    assert shot.skipped_hardlinks == 3  # notes.txt, src/a.txt, src/b.txt
    assert shot.skipped_special == hostile["special"]
    assert shot.skipped_unreadable == 0
    assert shot.skipped == {
        "symlinks": 3, "excluded": hostile["excluded"], "hardlinks": 3, "special": hostile["special"], "unreadable": 0,
    }  # fmt: skip


def test_a_deep_snapshot_can_be_replaced_made_writable_and_removed(hostile: dict[str, Any], tmp_path: Path) -> None:
    root: Path = hostile["root"]
    target = tmp_path / "again"
    within(120, lambda: snapshot(root, target), unblock_fifo(root))
    (root / "new.py").write_text("y = 2\n")
    shot: Snapshot = within(120, lambda: snapshot(root, target), unblock_fifo(root))  # replaces the deep copy
    assert (shot.path / "new.py").read_text() == "y = 2\n"

    make_writable(target)
    copied = tree(target)
    assert all(mode & 0o700 == 0o700 for mode, _ in copied.values() if stat.S_ISDIR(mode))
    assert all(mode & 0o600 == 0o600 for mode, _ in copied.values() if stat.S_ISREG(mode))
    remove_tree(target)
    assert not os.path.lexists(target)
    assert (root / "README.md").exists()  # the peer is untouched


def test_make_writable_and_remove_tree_never_follow_a_symlink(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "file").write_text("keep\n")
    os.chmod(precious / "file", 0o444)
    link = tmp_path / "link"
    link.symlink_to(precious)
    make_writable(link)
    assert stat.S_IMODE((precious / "file").stat().st_mode) == 0o444
    remove_tree(link)
    assert not os.path.lexists(link)
    assert (precious / "file").read_text() == "keep\n"


def test_every_name_of_the_issue_is_excluded_in_any_case() -> None:
    for name in (*SECRET_FILES, *SECRET_DIRS):
        for variant in (name, name.lower(), name.upper()):
            assert excluded(variant), variant
    assert all(p == p.lower() for p in EXCLUDED)
    for name in ("app.py", "id_utils.py", "keys.md", "monkey.py", "environment.py", "README.md", "Makefile"):
        assert not excluded(name), name
