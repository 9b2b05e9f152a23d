"""A scripted Gemini API server on loopback (a test double at the HTTP boundary), for running the
real gemini-cli program against it (`GOOGLE_GEMINI_BASE_URL`, which gemini-cli honours as a
"gateway": the @google/genai client then posts to `{base}/v1beta/models/{model}:{method}`).

It answers `:streamGenerateContent` (SSE with `?alt=sse`), `:generateContent` (JSON) and
`:countTokens`, and records every request. Several programs talk to it at once (one per task),
so each request is matched to its script by its content.

    script = {KEY: [ENTRY, ENTRY, ...]}

KEY is text from the task's prompt; a request belongs to the first KEY found in its user
contents. Its turn is the number of model contents after that prompt (0 for the first call, 1
after the first function call's response came back, ...), and it is answered with that ENTRY:

    {"call": "write_file", "args": {"file_path": "{cwd}/a.txt", "content": "..."}}   a function call
    {"text": "done"}                                                                  a final text answer
    {"status": 400, "message": "..."}                                                 a Google API error body

"{cwd}" in a string of an entry is the request's working directory, as gemini-cli states it in
its opening `<session_context>` message ("**Workspace Directories:**"). A request that offers no tools is a side request (gemini-cli's own checks,
such as which model to route to or who speaks next): it is answered with `side_answer(request)`
and never consumes the script. A request that matches no KEY, or runs past its script, is
answered 400 naming why, so a wrong script fails the test rather than hangs it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.agents.scripting import ScriptedServer, fill, own_part

_CWD = re.compile(r"\*\*Workspace Directories:\*\*\s*-\s*(/\S+)")  # in its <session_context> message
_METHOD = re.compile(r"^/v1beta/models/([^/:?]+):(\w+)")


def _text_of(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return "\n".join(
        str(part["text"])
        for part in (parts if isinstance(parts, list) else [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def default_side_answer(request: dict[str, Any]) -> str:
    """A side request's text: JSON when one is asked for (gemini-cli parses it), else a title."""
    config = request.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json" or config.get("responseJsonSchema"):
        return json.dumps({"next_speaker": "user", "reasoning": "fake", "model_choice": "flash"})
    return "Fake title"


class FakeGemini(ScriptedServer):
    def __init__(
        self,
        script: dict[str, list[dict[str, Any]]],
        side_answer: Callable[[dict[str, Any]], str] = default_side_answer,
    ) -> None:
        super().__init__(script)
        self.side_answer = side_answer

    @property
    def base_url(self) -> str:
        """`GOOGLE_GEMINI_BASE_URL` (the client appends /v1beta/models/...)."""
        return self.address

    # -- what was asked ---------------------------------------------------------------------

    @staticmethod
    def function_responses(request: dict[str, Any]) -> list[dict[str, Any]]:
        """The functionResponse parts of a request's last content (what the program did with the
        previous answer's calls): [{"name": ..., "response": {...}}]."""
        contents = request["body"].get("contents") or []
        parts = contents[-1].get("parts") if contents else None
        return [
            part["functionResponse"]
            for part in (parts if isinstance(parts, list) else [])
            if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict)
        ]

    # -- answering --------------------------------------------------------------------------

    def not_found(self, handler: BaseHTTPRequestHandler) -> None:
        self.error(handler, 404, f"the fake serves POST /v1beta/models/..., not GET {handler.path}")

    def handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        match = _METHOD.match(handler.path)
        method = match.group(2) if match else None
        if method == "countTokens":
            self.record(handler, body, None, "count_tokens")
            self.json(handler, 200, {"totalTokens": 100})
            return
        if method not in ("streamGenerateContent", "generateContent"):
            self.record(handler, body, None, None)
            self.error(handler, 404, f"the fake serves :streamGenerateContent and :generateContent, not {handler.path}")
            return
        contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
        if not body.get("tools"):
            self.record(handler, body, None, "side")
            self.answer(handler, method, body, {"text": self.side_answer(body)})
            return
        users = [_text_of(c) for c in contents if c.get("role") == "user"]
        key = next((k for k in self.script if any(k in own_part(text) for text in users)), None)
        start = next((i for i, c in enumerate(contents) if key and key in _text_of(c)), 0)
        turn = sum(1 for c in contents[start:] if c.get("role") == "model")
        found = next((m for m in map(_CWD.search, map(_text_of, contents)) if m), None)
        cwd = found.group(1) if found else None
        self.record(handler, body, key, turn, cwd)
        if key is None:
            self.error(handler, 400, f"fake: no script for a request whose user contents are {users!r:.300}")
            return
        entries = self.script[key]
        if turn >= len(entries):
            self.error(handler, 400, f"fake: the script for {key!r} ran out at turn {turn}")
            return
        self.answer(handler, method, body, fill(entries[turn], cwd or "{cwd}"))

    def answer(
        self, handler: BaseHTTPRequestHandler, method: str, request: dict[str, Any], entry: dict[str, Any]
    ) -> None:
        if "status" in entry:
            self.error(handler, int(entry["status"]), entry["message"])
            return
        if "call" in entry:
            parts: list[dict[str, Any]] = [{"functionCall": {"name": entry["call"], "args": entry.get("args", {})}}]
        else:
            parts = [{"text": entry["text"]}]
        response = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 150},
            "modelVersion": "fake",
        }
        if method == "generateContent":
            self.json(handler, 200, response)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.wfile.write(f"data: {json.dumps(response)}\r\n\r\n".encode())
        handler.wfile.flush()

    @staticmethod
    def json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def error(self, handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        reason = "INVALID_ARGUMENT" if status == 400 else "UNAVAILABLE"
        self.json(handler, status, {"error": {"code": status, "message": message, "status": reason}})
