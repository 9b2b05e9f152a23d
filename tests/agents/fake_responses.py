"""A scripted OpenAI Responses API server on loopback (a test double at the HTTP boundary), for
running the real codex program against it (a custom `[model_providers.NAME]` in codex's
config.toml with `wire_api = "responses"` and `base_url` = `base_url` here).

It answers `POST /v1/responses`, streaming SSE (codex always asks `"stream": true`), and records
every request. Several programs talk to it at once (one per task), so nothing is answered in
arrival order: each request is matched to its script by its content.

    script = {KEY: [ENTRY, ENTRY, ...]}

KEY is text from the task's prompt; a request belongs to the first KEY found in its user
messages. Its turn is the number of calls the model already made in its `input` (codex sends
the whole conversation each time: 0 for the first call, 1 after the first call's output came
back, ...), and it is answered with that ENTRY:

    {"tool": "shell", "arguments": {"command": [...]}}            a function call
    {"custom": "apply_patch", "input": "*** Begin Patch ..."}     a custom (freeform) tool call
    {"text": "done"}                                             a final text answer
    {"status": 400, "message": "..."}                            an OpenAI error body

"{cwd}" in a string of an entry is the request's working directory, as codex states it (in
`<cwd>...</cwd>` of its environment context). A request that matches no KEY, or runs past its
script, is answered 400 naming why, so a wrong script fails the test rather than hangs it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.agents.scripting import ScriptedServer, fill, own_part

_CWD = re.compile(r"<cwd>\s*(/[^<\s]+)\s*</cwd>")
CALLS = ("function_call", "custom_tool_call", "local_shell_call")
OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


def _text_of(content: Any) -> str:
    """The text in an input item's content (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part["text"])
        for part in (content if isinstance(content, list) else [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


class FakeResponses(ScriptedServer):
    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(script)
        self.ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """A provider's `base_url` (codex appends /responses)."""
        return f"{self.address}/v1"

    # -- what was asked ---------------------------------------------------------------------

    @staticmethod
    def call_outputs(request: dict[str, Any]) -> list[str]:
        """The outputs of the calls in a request's input (what the program did with them)."""
        outputs = []
        for item in request["body"].get("input") or []:
            if isinstance(item, dict) and item.get("type") in OUTPUTS:
                output = item.get("output")
                outputs.append(output if isinstance(output, str) else json.dumps(output))
        return outputs

    # -- answering --------------------------------------------------------------------------

    def not_found(self, handler: BaseHTTPRequestHandler) -> None:
        self.error(handler, 404, f"the fake serves POST /v1/responses, not GET {handler.path}")

    def handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if handler.path.split("?", 1)[0] != "/v1/responses":
            self.record(handler, body, None, None)
            self.error(handler, 404, f"the fake serves POST /v1/responses, not {handler.path}")
            return
        items = [i for i in body.get("input") or [] if isinstance(i, dict)]
        texts = [_text_of(i.get("content")) for i in items if i.get("role") in ("user", "developer", "system")]
        users = [_text_of(i.get("content")) for i in items if i.get("role") == "user"]
        key = next((k for k in self.script if any(k in own_part(text) for text in users)), None)
        turn = sum(1 for i in items if i.get("type") in CALLS)
        match = next((m for m in map(_CWD.search, texts) if m), None)
        cwd = match.group(1) if match else None
        self.record(handler, body, key, turn, cwd)
        if key is None:
            self.error(handler, 400, f"fake: no script for a request whose user messages are {users!r:.300}")
            return
        entries = self.script[key]
        if turn >= len(entries):
            self.error(handler, 400, f"fake: the script for {key!r} ran out at turn {turn}")
            return
        self.answer(handler, body, fill(entries[turn], cwd or "{cwd}"))

    def answer(self, handler: BaseHTTPRequestHandler, request: dict[str, Any], entry: dict[str, Any]) -> None:
        if "status" in entry:
            self.error(handler, int(entry["status"]), entry["message"])
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        for event in self.events(request, entry):
            handler.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            handler.wfile.flush()

    def events(self, request: dict[str, Any], entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        response_id = f"resp_fake{next(self.ids)}"
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": 0,
            "status": "in_progress",
            "model": request.get("model", "fake"),
            "output": [],
        }
        yield {"type": "response.created", "response": response}
        item_id = f"item_fake{next(self.ids)}"
        call_id = f"call_fake{next(self.ids)}"
        item: dict[str, Any]
        if "tool" in entry:
            args = json.dumps(entry.get("arguments", {}))
            item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": entry["tool"]}
            yield {"type": "response.output_item.added", "output_index": 0, "item": {**item, "arguments": ""}}
            for i in range(0, len(args), 32):
                yield {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "delta": args[i : i + 32],
                }
            item = {**item, "arguments": args, "status": "completed"}
        elif "custom" in entry:
            item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": entry["custom"]}
            yield {"type": "response.output_item.added", "output_index": 0, "item": {**item, "input": ""}}
            item = {**item, "input": entry["input"], "status": "completed"}
        else:
            text = entry["text"]
            item = {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}
            yield {"type": "response.output_item.added", "output_index": 0, "item": item}
            for i in range(0, len(text), 16):
                yield {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": text[i : i + 16],
                }
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {**item, "status": "completed", "content": [part]}
        yield {"type": "response.output_item.done", "output_index": 0, "item": item}
        usage = {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 150,
        }
        yield {
            "type": "response.completed",
            "response": {**response, "status": "completed", "output": [item], "usage": usage},
        }

    @staticmethod
    def error(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        payload = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
