"""A scripted Anthropic Messages API server on loopback (a test double at the HTTP boundary),
for running the real Claude Code and opencode programs against it (`ANTHROPIC_BASE_URL`).

It answers `POST /v1/messages` (any query string: Claude Code sends `?beta=true`), streaming SSE
when the request says `"stream": true` and JSON otherwise, and records every request. Several
programs talk to it at once (one per task), so nothing is answered in arrival order: each
request is matched to its script by its content.

    script = {KEY: [ENTRY, ENTRY, ...]}

KEY is text from the task's prompt; a request belongs to the first KEY found in its first user
message. Its turn is the number of assistant messages it already holds (0 for the first call,
1 after the first tool call came back as a tool_result, ...), and it is answered with that ENTRY:

    {"tool": "Write", "input": {"file_path": "{cwd}/a.txt", "content": "..."}}   a tool call
    {"tools": [{"name": ..., "input": {...}}, ...], "text": "..."}    several blocks in one answer
    {"text": "done"}                                                   a final text answer
    {"status": 400, "message": "..."}                                  an Anthropic error body

"{cwd}" in a string of an entry is the request's working directory, as the program states it
(Claude Code 2.1 in a "system" message among the messages, opencode in `system`). A request that offers no tools is a side request (a session
title, a haiku summary): it is answered with `side_text` and never consumes the script. A
request that matches no KEY, or runs past its script, is answered 400 naming why, so a wrong
script fails the test rather than hangs it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.agents.scripting import ScriptedServer, fill, own_part

# Claude Code: "Primary working directory: /x"; opencode: "Working directory: /x" (in <env>).
_CWD = re.compile(r"(?:Primary working directory|Working directory):\s*(/\S+)")


def _text_of(content: Any) -> str:
    """The text in a message's content (a string, or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


class FakeAnthropic(ScriptedServer):
    def __init__(self, script: dict[str, list[dict[str, Any]]], side_text: str = "Fake title") -> None:
        super().__init__(script)
        self.side_text = side_text
        self.ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """`ANTHROPIC_BASE_URL` (both programs append /v1/messages themselves)."""
        return self.address

    # -- what was asked ---------------------------------------------------------------------

    def side_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["key"] is None and r["turn"] == "side"]

    @staticmethod
    def tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
        """The tool_result blocks of a request's last message (what the program did with the
        previous answer's tool calls): [{"is_error": bool, "text": str}]."""
        messages = request["body"].get("messages") or []
        content = messages[-1].get("content") if messages else None
        return [
            {"is_error": bool(block.get("is_error")), "text": _text_of(block.get("content"))}
            for block in (content if isinstance(content, list) else [])
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    # -- answering --------------------------------------------------------------------------

    def not_found(self, handler: BaseHTTPRequestHandler) -> None:
        self.error(handler, 404, "not_found_error", f"the fake serves POST /v1/messages, not GET {handler.path}")

    def handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        path = handler.path.split("?", 1)[0]
        if path.endswith("/count_tokens"):
            self.record(handler, body, None, "count_tokens")
            self.json(handler, 200, {"input_tokens": 100})
            return
        if not path.endswith("/v1/messages"):
            self.record(handler, body, None, None)
            self.error(handler, 404, "not_found_error", f"the fake serves POST /v1/messages, not {handler.path}")
            return
        messages = body.get("messages") or []
        if not body.get("tools"):
            self.record(handler, body, None, "side")
            self.answer(handler, body, {"text": self.side_text})
            return
        first = next((m for m in messages if m.get("role") == "user"), {})
        first_text = _text_of(first.get("content"))
        key = next((k for k in self.script if k in own_part(first_text)), None)
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        texts = [_text_of(body.get("system")), *(_text_of(m.get("content")) for m in messages)]
        match = next((m for m in map(_CWD.search, texts) if m), None)
        cwd = match.group(1) if match else None
        self.record(handler, body, key, turn, cwd)
        if key is None:
            self.error(handler, 400, "invalid_request_error", f"fake: no script for a prompt like {first_text[:200]!r}")
            return
        entries = self.script[key]
        if turn >= len(entries):
            self.error(handler, 400, "invalid_request_error", f"fake: the script for {key!r} ran out at turn {turn}")
            return
        self.answer(handler, body, fill(entries[turn], cwd or "{cwd}"))

    def answer(self, handler: BaseHTTPRequestHandler, request: dict[str, Any], entry: dict[str, Any]) -> None:
        if "status" in entry:
            self.error(handler, int(entry["status"]), entry.get("type", "invalid_request_error"), entry["message"])
            return
        blocks: list[dict[str, Any]] = []
        if entry.get("text"):
            blocks.append({"type": "text", "text": entry["text"]})
        tools = list(entry.get("tools", []))
        if "tool" in entry:
            tools.append({"name": entry["tool"], "input": entry.get("input", {})})
        for tool in tools:
            blocks.append(
                {"type": "tool_use", "id": f"toolu_fake{next(self.ids)}", "name": tool["name"], "input": tool["input"]}
            )
        stop = "tool_use" if tools else "end_turn"
        message = {
            "id": f"msg_fake{next(self.ids)}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "fake"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 120,
                "output_tokens": 30,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        if not request.get("stream"):
            self.json(handler, 200, message)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        for event in self.events(message):
            handler.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            handler.wfile.flush()

    @staticmethod
    def events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        yield {"type": "message_start", "message": start}
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
                text = block["text"]
                for i in range(0, len(text), 16):
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": text[i : i + 16]},
                    }
            else:
                empty = {**block, "input": {}}
                yield {"type": "content_block_start", "index": index, "content_block": empty}
                args = json.dumps(block["input"])
                for i in range(0, len(args), 32):
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args[i : i + 32]},
                    }
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
        yield {"type": "message_stop"}

    @staticmethod
    def json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def error(self, handler: BaseHTTPRequestHandler, status: int, kind: str, message: str) -> None:
        self.json(handler, status, {"type": "error", "error": {"type": kind, "message": message}})
