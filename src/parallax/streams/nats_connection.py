"""One connection to a NATS server or cluster, and requests that wait out a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.client import JetStreamContext

from parallax.streams.nats_codec import NatsStoreError, NatsUnavailable

T = TypeVar("T")


async def keep_cancellation(awaitable: Awaitable[T]) -> T:
    """`await awaitable`, raising CancelledError if the task was cancelled meanwhile and the
    awaitable returned anyway. nats-py waits for answers with asyncio.wait_for, which on Python
    3.11 returns the answer instead of raising when a cancellation arrives together with it
    (python/cpython#86296): the task would run on as if it had never been cancelled, and whoever
    cancelled it and waits for it to end (a worker shutting down, a work board's watcher being
    closed) would wait forever. On a loaded machine the two arrive together often."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


class _Client(NatsClient):
    """nats-py's client, whose requests (its JetStream and key-value calls included) keep the
    cancellations they would swallow."""

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,  # noqa: ASYNC109 - nats-py's signature, overridden
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        return await keep_cancellation(
            super().request(subject, payload, timeout=timeout, old_style=old_style, headers=headers)
        )


@dataclass
class Watch:
    subscription: Any = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # replaced each time it is set
    waiters: int = 0


class NatsConnection:
    def __init__(self, servers: list[str], timeout: float, connect_timeout: float, credentials: str | None) -> None:
        self.servers = servers
        self.url = ",".join(servers)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.credentials = credentials
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._watches: dict[str, Watch] = {}
        self.closed = False

    async def connection(self) -> tuple[NatsClient, JetStreamContext]:
        """The connected client (connecting on first use; reconnects are automatic)."""
        if self._nc is not None and self._js is not None and not self._nc.is_closed:
            return self._nc, self._js
        async with self._connecting:
            if self._nc is None or self._nc.is_closed or self._js is None:
                if self.closed:
                    raise NatsStoreError("the NATS store is closed")
                try:
                    # The first connection must succeed within the timeout; later drops are
                    # reconnected forever (max_reconnect_attempts=-1) while requests wait.
                    self._nc = await asyncio.wait_for(self._connect(), self.connect_timeout * 2 + 1)
                except Exception as e:
                    raise NatsUnavailable(
                        f"cannot connect to NATS at {self.url}: {e or type(e).__name__}. "
                        "Start one with: nats-server -js -a 127.0.0.1"
                    ) from e
                self._js = self._nc.jetstream(timeout=self.timeout)
            assert self._nc is not None
            assert self._js is not None
            return self._nc, self._js

    async def _connect(self) -> NatsClient:
        options: dict[str, Any] = {  # nats.connect's options (its types say int where it takes float)
            "connect_timeout": self.connect_timeout,
            "drain_timeout": 2,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "allow_reconnect": True,
            "user_credentials": self.credentials,
            "error_cb": _ignore_error,
            "disconnected_cb": _noop,
            "reconnected_cb": _noop,
            "closed_cb": _noop,
        }
        client = _Client()  # what nats.connect does, with the client that keeps cancellations
        await client.connect(servers=self.servers, **options)
        return client

    async def close(self) -> None:
        self.closed = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception:  # already disconnected: close is all that is left
                await self._nc.close()

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
        """A request retried while the server is away (reconnecting), up to the timeout x 6."""
        nc, _ = await self.connection()
        deadline = time.monotonic() + self.timeout * 6
        while True:
            try:
                return await nc.request(subject, payload, timeout=self.timeout, headers=headers)
            except (NatsTimeout, NoRespondersError, ConnectionClosedError, OSError) as e:
                if isinstance(e, NoRespondersError) and subject.startswith("$JS.API.DIRECT.GET."):
                    raise  # no stream answers: the caller decides whether that means "missing"
                if time.monotonic() > deadline or self.closed:
                    raise NatsUnavailable(f"NATS at {self.url} did not answer {subject.split('.')[2]} in time") from e
                await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def watching(self, subject: str) -> AsyncIterator[Watch]:
        """A wake-up for each message published on `subject`: one core subscription per
        subject, shared by every waiter on this connection."""
        watch = self._watches.get(subject)
        if watch is None:
            nc, _ = await self.connection()
            watch = self._watches.get(subject)  # another waiter may have subscribed meanwhile
            if watch is None:
                fresh = Watch()

                async def wake(_: Msg) -> None:
                    fresh.changed.set()
                    fresh.changed = asyncio.Event()

                fresh.subscription = await nc.subscribe(subject, cb=wake)
                watch = self._watches.setdefault(subject, fresh)
                if watch is not fresh:
                    await fresh.subscription.unsubscribe()
        watch.waiters += 1
        try:
            yield watch
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                self._watches.pop(subject, None)
                with contextlib.suppress(ConnectionClosedError, NatsTimeout, NatsStoreError):
                    await watch.subscription.unsubscribe()

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API call (`$JS.API.<subject>`), its JSON answer."""
        msg = await self.request(f"$JS.API.{subject}", json.dumps(body or {}).encode())
        response: dict[str, Any] = json.loads(msg.data)
        return response


async def _ignore_error(_: Exception) -> None:
    """Connection errors are handled where requests fail; the client reconnects on its own."""


async def _noop() -> None:
    return None
