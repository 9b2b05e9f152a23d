"""Read-only peering snapshots: symlinks are never followed (skipped and counted), secrets and
tool folders never appear, and what is copied is read-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from parallax.workspaces.peering import EXCLUDED, make_writable, snapshot

SECRETS = [
    ".env", ".env.local", ".envrc", "credentials.json", "service-account.json", ".npmrc", ".pypirc", ".netrc",
    ".htpasswd", ".pgpass", "deploy/.env.production",
]  # fmt: skip
FOLDERS = [".git", "node_modules", ".venv", ".claude", ".codex", ".cursor", ".vscode", ".idea", ".docker", ".config"]


@pytest.fixture
def peer(tmp_path: Path) -> Path:
    root = tmp_path / "peer"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "README.md").write_text("readme\n")
    for name in SECRETS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("TOP-SECRET\n")
    for folder in FOLDERS:
        (root / folder).mkdir()
        (root / folder / "inside.txt").write_text("TOP-SECRET\n")
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("TOP-SECRET\n")
    (root / "link-out").symlink_to(outside)  # a link to a file outside the tree
    (root / "src" / "link-env").symlink_to(root / ".env")  # a link to an excluded secret inside
    (root / "link-dir").symlink_to(tmp_path)  # a link to a directory above
    (root / "src" / "loop").symlink_to(root / "src")  # a loop
    return root


def test_snapshot_copies_code_and_nothing_else(peer: Path, tmp_path: Path) -> None:
    shot = snapshot(peer, tmp_path / "reader" / ".shared" / "peer")
    copied = sorted(str(p.relative_to(shot.path)) for p in shot.path.rglob("*"))
    assert copied == ["README.md", "deploy", "src", "src/app.py"]  # deploy/ is left empty
    assert shot.files == 2
    assert shot.skipped_symlinks == 4
    assert shot.excluded == len([s for s in SECRETS if "/" not in s]) + len(FOLDERS) + 1  # + deploy/.env.production
    for path in shot.path.rglob("*"):
        assert not path.is_symlink()
        assert "TOP-SECRET" not in (path.read_text() if path.is_file() else "")


def test_snapshot_is_read_only(peer: Path, tmp_path: Path) -> None:
    shot = snapshot(peer, tmp_path / "ro")
    app = shot.path / "src" / "app.py"
    assert stat.S_IMODE(app.stat().st_mode) == 0o444
    assert stat.S_IMODE((shot.path / "src").stat().st_mode) == 0o555
    if os.geteuid() != 0:  # root ignores modes; the sandbox (not the modes) stops root
        with pytest.raises(PermissionError):
            app.write_text("changed")
    # writing the copy could never reach the peer anyway
    make_writable(shot.path)
    app.write_text("changed")
    assert (peer / "src" / "app.py").read_text() == "print('hi')\n"


def test_the_exclude_list_covers_what_the_issue_names() -> None:
    for name in (".env", ".envrc", "credentials.json", "service-account.json", ".npmrc", ".pypirc", ".netrc",
                 ".htpasswd", ".pgpass", ".git", "node_modules", ".venv", ".claude", ".codex", ".cursor", ".vscode",
                 ".idea", ".docker", ".config"):  # fmt: skip
        assert any(__import__("fnmatch").fnmatchcase(name, p) for p in EXCLUDED), name


def test_a_second_snapshot_replaces_the_first(peer: Path, tmp_path: Path) -> None:
    target = tmp_path / "again"
    snapshot(peer, target)
    (peer / "src" / "new.py").write_text("x = 1\n")
    shot = snapshot(peer, target)
    assert (shot.path / "src" / "new.py").exists()
