"""A real nats-server per test module, on a loopback port, in a temp dir (killable, restartable)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from parallax.streams import StreamStore
from parallax.streams.memory import MemoryStore
from parallax.streams.nats import NatsStore
from parallax.streams.nats_server import NatsServer
from parallax.streams.sqlite import SqliteStore


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats"))).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["memory", "sqlite", "nats"], name="store")
async def every_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StreamStore]:
    """The same test on each backend (NATS: a fresh namespace on the module's server)."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        async with SqliteStore(tmp_path / "store.db") as sqlite:
            yield sqlite
    else:
        server: NatsServer = request.getfixturevalue("nats_server")
        async with NatsStore(server.url, prefix=f"S{secrets.token_hex(4)}") as nats:
            yield nats
