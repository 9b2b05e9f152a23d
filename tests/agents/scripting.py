"""Shared by the scripted model servers (test doubles at the HTTP boundary)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

PEERS_SECTION = "## Tasks running beside you"  # engine/peers.py appends it to a task's prompt


def own_part(prompt: str) -> str:
    """A task's own prompt, without the section about its peers: a script is keyed by what the
    task was asked, and a peer's prompt quoted there must not select the peer's script."""
    return prompt.split(PEERS_SECTION, 1)[0]


def fill(value: Any, cwd: str) -> Any:
    """A scripted answer with `{cwd}` replaced by the working directory the program stated."""
    if isinstance(value, str):
        return value.replace("{cwd}", cwd)
    if isinstance(value, dict):
        return {k: fill(v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, cwd) for v in value]
    return value


class ScriptedServer:
    """What the scripted model servers share: a threaded HTTP server on 127.0.0.1 that parses
    each POST's JSON body and hands it to `handle`, answers GET with `not_found`, records every
    request, and is a context manager. A subclass speaks one provider's API."""

    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body", "key", "turn", "cwd"}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                fake.handle(self, body)

            def do_GET(self) -> None:
                fake.record(self, None, None, None)
                fake.not_found(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def not_found(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def of(self, key: str) -> list[dict[str, Any]]:
        """The recorded requests matched to a script KEY, in arrival order."""
        with self.lock:
            return [r for r in self.requests if r["key"] == key]

    def side_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["turn"] == "side"]

    def record(
        self,
        handler: BaseHTTPRequestHandler,
        body: Any,
        key: str | None,
        turn: int | str | None,
        cwd: str | None = None,
    ) -> None:
        entry = {"path": handler.path, "headers": dict(handler.headers.items()), "body": body, "key": key, "turn": turn}
        with self.lock:
            self.requests.append({**entry, "cwd": cwd})
