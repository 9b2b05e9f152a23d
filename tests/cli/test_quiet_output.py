"""What a person sees is Parallax's own output: no third-party banner in the live lanes, even on
a terminal (pydantic-ai prints its first-run banner when stderr is a terminal and the process
is not under CI or pytest)."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from tests.cli.test_config import ROOT, project_with
from tests.processes import reap


def test_no_third_party_banner_on_a_terminal(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    for suffix in (".yaml", ".answers.json"):
        shutil.copy(ROOT / "examples" / f"fanout{suffix}", project / f"fanout{suffix}")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_VERSION") and not k.startswith("PARALLAX_")}
    env.update({"PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(project / "user-config"), "COLUMNS": "120"})
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read as it is written: a full terminal buffer would block the child
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "parallax", "run", "fanout.yaml", "--no-cache"],
            cwd=project, env=env, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            code = child.wait(timeout=120)
        finally:
            reap(child)
        os.close(follower)
        follower = -1
        reader.join(timeout=60)
    finally:
        if follower != -1:
            os.close(follower)
        reader.join(timeout=60)
        os.close(leader)
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert code == 0, shown
    assert "design-review" in shown and "succeeded" in shown  # the lanes and the summary were on the terminal
    assert "observability" not in shown and "Logfire" not in shown and "logfire" not in shown
