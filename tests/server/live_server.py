"""A real `parallax serve` on a loopback port, for the browser and SSE tests (and bench/sse.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import stop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(
    db: Path, token: str, log: Path, *, port: int | None = None, cwd: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`port`: this one (a restarted server on the same address), else a free one; `cwd`: where
    the server runs (the repository of a task graph)."""
    port = port or free_port()
    env = {**os.environ, "PARALLAX_TOKEN": token}
    with log.open("a") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "serve", "--port", str(port)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a deadline: a loaded machine can take long to start Python
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield base, process
    finally:
        stop(process)
