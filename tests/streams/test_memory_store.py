from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parallax.streams.memory import MemoryStore
from tests.streams.contract import StreamStoreContract


class TestMemoryStore(StreamStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        async with MemoryStore() as store:
            yield store
