"""The Chat Completions fake (tests/agents/fake_openai.py) answering by content rather than in
arrival order, for real programs that talk to it at once (one per task): aider through litellm.

    script = {KEY: [ENTRY, ENTRY, ...]}

KEY is text from the task's prompt; a request belongs to the first KEY found in its user
messages, and its turn is the number of assistant messages after that message. ENTRY is one of
fake_openai's (`{"text": ...}`, `{"tool": ...}`, `{"status": 400, "message": "..."}`); a request
that says `"stream": false` (aider's `--no-stream`) gets one JSON completion instead of chunks.
Every request is recorded with its path and headers. A request that matches no KEY, or runs
past its script, is answered 400 naming why.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.agents.fake_openai import FakeOpenAI
from tests.agents.scripting import own_part


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part["text"])
        for part in (content if isinstance(content, list) else [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


class FakeChat(FakeOpenAI):
    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__([])
        self.keyed = script
        self.log: list[dict[str, Any]] = []  # {"path", "headers", "body", "key", "turn"}
        self.lock = threading.Lock()

    def __enter__(self) -> FakeChat:
        super().__enter__()
        return self

    def of(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.log if r["key"] == key]

    def respond(self, handler: BaseHTTPRequestHandler, request: dict[str, Any], entry: dict[str, Any]) -> None:
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        key = next((k for k in self.keyed if any(k in own_part(text) for text in users)), None)
        # aider opens with example exchanges: count the answers after the prompt's message
        start = next((i for i, m in enumerate(messages) if key and key in _text_of(m.get("content"))), 0)
        turn = sum(1 for m in messages[start:] if m.get("role") == "assistant")
        record = {"path": handler.path, "headers": dict(handler.headers.items()), "body": request}
        with self.lock:
            self.log.append({**record, "key": key, "turn": turn})
        if key is None:
            entry = {"status": 400, "message": f"fake: no script for a request whose user messages are {users!r:.300}"}
        elif turn >= len(self.keyed[key]):
            entry = {"status": 400, "message": f"fake: the script for {key!r} ran out at turn {turn}"}
        else:
            entry = self.keyed[key][turn]
        if "message" in entry:
            error = {"message": entry["message"], "type": "invalid_request_error", "param": None, "code": None}
            entry = {"status": entry["status"], "body": {"error": error}}
        if "status" in entry or request.get("stream"):
            super().respond(handler, request, entry)
            return
        message: dict[str, Any] = {"role": "assistant", "content": entry.get("text")}
        if "tool" in entry:
            function = {"name": entry["tool"]["name"], "arguments": json.dumps(entry["tool"]["arguments"])}
            message["tool_calls"] = [{"id": "call_1", "type": "function", "function": function}]
        completion = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if "tool" in entry else "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        }
        payload = json.dumps(completion).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
