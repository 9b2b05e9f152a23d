"""The HTTP/1.1 protocol `parallax serve` runs: uvicorn's h11 protocol with a deadline on idleness.

Guarantee: a connection that is not in the middle of a request (just opened, or its last
response sent) must deliver the complete headers of its next request within `timeout_keep_alive`
seconds, or it is closed. uvicorn alone never times out a connection that has not sent a request
yet, and stops its keep-alive timer at the first byte, so a client trickling header bytes (or
sending nothing) would hold a connection forever. Once a request's headers are in, the request is
the application's: its body is timed by the guard (parallax.server.guard) and a response that
streams (SSE) is never cut. Headers are bounded by h11's incomplete-event limit (16 KiB).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class IdleTimeoutH11Protocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _watch(self) -> None:
        in_request = self.cycle is not None and not self.cycle.response_complete
        if in_request or self.transport.is_closing():
            self._stop()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expire)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
