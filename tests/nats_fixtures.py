"""A real nats-server per test module, on a loopback port, in a temp dir (killable, restartable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parallax.streams.nats_server import NatsServer


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats"))).start()
    try:
        yield server
    finally:
        server.kill()
