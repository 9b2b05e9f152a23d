"""The control plane's front door: a pure ASGI middleware that every HTTP request passes before
the application sees it.

Guarantees, in order:
- `/health` and the static pages (`/` the dashboard page and its /static files, `/docs`, `/redoc`, `/openapi.json`)
  are open; they carry no data. Every other request must present a valid token, judged from the
  request line and headers alone: without one it is answered 401 at once, its body is never
  read, and the connection is closed.
- The token is `Authorization: Bearer <token>`; `?token=<token>` counts only on the SSE
  endpoints (`GET /streams/{name}/events`, `GET /runs/{id}/events`, `GET /runs/{id}/live`),
  because browsers' EventSource cannot set headers. Elsewhere a query token is ignored (401).
- Bodies are capped (`max_body` bytes): a larger `Content-Length` is answered 413 at once; a
  body without one (chunked) is counted as it arrives and answered 413 as soon as it passes the
  cap. The body (at most the cap) is read here, with at most `body_timeout_s` between two
  chunks (else 408), and handed to the application whole.
- A JSON body holding NaN, Infinity or a number beyond float range is answered 422: the
  stdlib's parser accepts them, and they would otherwise surface later as 500s (a validation
  error quoting the value cannot be rendered) or as records that are not JSON.

The checked principal is left in the request scope under `PRINCIPAL` for the endpoints' own
checks (admin only, run-scoped tokens kept to their run).
"""

from __future__ import annotations

import asyncio
import json
import re
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from parallax.server.auth import Tokens

PRINCIPAL = "parallax.principal"
DEFAULT_MAX_BODY = 1024 * 1024
# The dashboard's own files (src/parallax/server/static), by name: served without a token.
STATIC = {"dashboard.js": "text/javascript", "markdown.js": "text/javascript", "dashboard.css": "text/css"}
OPEN_PATHS = frozenset(
    {"/health", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", *(f"/static/{n}" for n in STATIC)}
)
SSE_PATH = re.compile(r"/streams/.*/events|/runs/[^/]+/(?:events|live)")


class _NotFinite(Exception):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotFinite(text)
    return value


def _not_finite(text: str) -> Any:
    raise _NotFinite(text)


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides: no content type, or application/json, or application/*+json."""
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def non_finite_number(body: bytes) -> str | None:
    """The first NaN, Infinity or out-of-range number in a JSON document, else None (also when
    the document is not JSON at all: that is the application's to refuse)."""
    try:
        json.loads(body, parse_constant=_not_finite, parse_float=_finite_float)
    except _NotFinite as e:
        return str(e)
    except (ValueError, RecursionError):
        return None
    return None


class Guard:
    def __init__(self, app: ASGIApp, tokens: Tokens, max_body: int, body_timeout_s: float) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        length_header = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (length_header is not None and length_header.strip() != b"0")
        path: str = scope["path"]
        if path not in OPEN_PATHS:
            who = self.tokens.check(self._token(scope, headers))
            if who is None:
                await _refuse(send, 401, "a valid bearer token is required", close=has_body,
                              extra=[(b"www-authenticate", b"Bearer")])  # fmt: skip
                return
            scope[PRINCIPAL] = who
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                await _refuse(send, 400, "Content-Length is not a number", close=True)
                return
            if length > self.max_body:
                await _refuse(send, 413, f"the body is {length} bytes; this server takes at most {self.max_body}",
                              close=True)  # fmt: skip
                return
        chunks: list[bytes] = []
        size = 0
        more = has_body
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                await _refuse(send, 408, f"no body bytes for {self.body_timeout_s:g} s", close=True)
                return
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(send, 413, f"the body passed {self.max_body} bytes, the most this server takes",
                              close=True)  # fmt: skip
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        content_type = headers.get(b"content-type")
        if body and _is_json(content_type.decode("latin-1") if content_type else None):
            bad = non_finite_number(body)
            if bad is not None:
                await _refuse(send, 422, f"the JSON body holds {bad}: numbers must be finite", close=False)
                return
        if not has_body:
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _token(scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        header = headers.get(b"authorization", b"").decode("latin-1")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ").strip() or None
        if scope["method"] == "GET" and SSE_PATH.fullmatch(scope["path"]):
            for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
                if key == "token":
                    return value or None
        return None


async def _refuse(
    send: Send, status: int, detail: str, *, close: bool, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:  # the body was not read: do not wait for it
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
