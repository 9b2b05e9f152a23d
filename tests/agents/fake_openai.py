"""A fake OpenAI-compatible chat completions server on loopback (a test double at the HTTP
boundary). It answers from a script, one entry per request, and records every request.

Script entries:
    {"tool": {"name": "...", "arguments": {...}}}   a streamed tool call (structured output)
    {"text": "..."}                                 streamed text
    {"status": 429, "headers": {"Retry-After": "1"}, "body": {...}}   an HTTP error
    {"raw": "not json"}                             a 200 whose body / stream is malformed
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(body)
                entry = fake.script.pop(0) if fake.script else {"status": 500, "body": {"error": "script ran out"}}
                fake.respond(self, body, entry)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def respond(self, handler: BaseHTTPRequestHandler, request: dict[str, Any], entry: dict[str, Any]) -> None:
        if "status" in entry:
            payload = json.dumps(entry.get("body", {"error": {"message": "scripted error"}})).encode()
            handler.send_response(int(entry["status"]))
            for key, value in entry.get("headers", {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if "raw" in entry:
            payload = entry["raw"].encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream" if request.get("stream") else "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        for chunk in self.chunks(request, entry):
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            handler.wfile.flush()
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @staticmethod
    def chunks(request: dict[str, Any], entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": request["model"]}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        if "tool" in entry:
            args = json.dumps(entry["tool"]["arguments"])
            yield chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": entry["tool"]["name"], "arguments": ""},
                        }
                    ],
                }
            )
            for i in range(0, len(args), 16):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 16]}}]})
            yield chunk({}, "tool_calls")
        else:
            text = entry["text"]
            yield chunk({"role": "assistant", "content": ""})
            for i in range(0, len(text), 8):
                yield chunk({"content": text[i : i + 8]})
            yield chunk({}, "stop")
        yield {**base, "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}}
