"""Attacks on the control plane: a real `parallax serve` (uvicorn) on a loopback port, real HTTP,
raw sockets where a well-behaved client library would hide the attack (a body that never
comes, headers trickled a byte at a time).

What must hold: the token is checked before a body is read; bodies are capped, declared or
chunked; `?token=` counts on SSE endpoints only; a weak token never guards a non-loopback
address; NaN and Infinity are 422, never 500; idle connections are closed, streams are not; a
slow pattern compile stalls no other request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from parallax.streams import AppendInput, AppendRecord
from parallax.streams.sqlite import SqliteStore
from tests.processes import stop
from tests.server.live_server import free_port

TOKEN = "security-test-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**ADMIN, "Content-Type": "application/json"}
MIB = 1024 * 1024
WAIT = 20.0  # generous: a loaded 2-core machine; an answer that waits for a body never comes at all
SMALL_BODY = 4096
IDLE_S = 1


def _start(db: Path, log: Path, flags: tuple[str, ...]) -> tuple[str, subprocess.Popen[bytes]] | None:
    """A started server, or None when another process answered on the port it was given (a
    free port is only free until someone takes it: other test runs share this machine)."""
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "parallax", "--store", f"sqlite://{db}", "serve", "--port", str(port), *flags],
            env={**os.environ, "PARALLAX_TOKEN": TOKEN}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a deadline: a loaded machine can take long to start Python
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                pass
            ours = httpx.get(f"{base}/runs", headers=ADMIN, timeout=WAIT).status_code == 200
            if ours and process.poll() is None:
                return base, process
            _stop(process)
            return None
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                raise RuntimeError(f"the server did not start: {log.read_text()}") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop(process)


@contextmanager
def serve_with(db: Path, log: Path, *flags: str) -> Iterator[str]:
    """tests/server/live_server.serve, with extra `parallax serve` flags, and sure that the server
    answering is this one."""
    for _ in range(5):
        started = _start(db, log, flags)
        if started is not None:
            break
    else:
        raise RuntimeError("every port tried was taken by another server")
    base, process = started
    try:
        yield base
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server as `parallax serve` starts by default (1 MiB bodies, 10 s idle)."""
    tmp = tmp_path_factory.mktemp("default")
    with serve_with(tmp / "s.db", tmp / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server with a 4 KiB body cap and a 1 s idle timeout, and its store's file."""
    tmp = tmp_path_factory.mktemp("small")
    flags = ("--max-body", str(SMALL_BODY), "--idle-timeout", str(IDLE_S))
    with serve_with(tmp / "s.db", tmp / "server.log", *flags) as url:
        yield url, tmp / "s.db"


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=WAIT)


def read_response(sock: socket.socket, timeout: float = WAIT) -> tuple[int, bytes, bytes]:
    """One response off a raw socket: status, head, body (socket.timeout if none comes in time)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length: *(\d+)", head)
    length = int(found.group(1)) if found else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        body += chunk
    return int(head.split()[1]), head, body[:length]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (anything it sends is skipped)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


# 7. the token before the body; bodies capped


def test_an_unauthenticated_huge_post_is_refused_before_its_body_is_read(base: str) -> None:
    for auth in ((), ("Authorization: Bearer wrong-token",), (f"Authorization: Basic {TOKEN}",)):
        with connect(base) as sock:
            # 300 MB announced, a few bytes sent: the answer must not wait for the rest
            sock.sendall(request_head("POST", "/runs", *auth, "Content-Type: application/json",
                                      "Content-Length: 300000000") + b'{"pattern": "')  # fmt: skip
            status, head, body = read_response(sock)
            assert status == 401, (auth, head, body)
            assert b"www-authenticate: bearer" in head.lower()
            assert closed_within(sock, WAIT), "the connection stays open waiting for a body it will not read"
    assert httpx.get(f"{base}/health", timeout=WAIT).status_code == 200


def test_an_authenticated_body_over_the_cap_is_413(base: str) -> None:
    # declared: answered at once, from the headers
    with connect(base) as sock:
        sock.sendall(request_head("POST", "/runs", f"Authorization: Bearer {TOKEN}", "Content-Type: application/json",
                                  f"Content-Length: {MIB + 1}") + b'{"pattern": "')  # fmt: skip
        status, head, _ = read_response(sock)
        assert status == 413, head
        assert closed_within(sock, WAIT)
    # chunked: counted as it arrives; just past the cap (and no end chunk ever sent) is enough
    with connect(base) as sock:
        sock.sendall(request_head("POST", "/runs", f"Authorization: Bearer {TOKEN}", "Content-Type: application/json",
                                  "Transfer-Encoding: chunked"))  # fmt: skip
        piece = b"x" * 65536
        for _ in range(MIB // len(piece)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"1\r\nx\r\n")  # byte MIB + 1
        status, head, _ = read_response(sock)
        assert status == 413, head
    # at the cap is fine: the request reaches the endpoint (no such run)
    padded = json.dumps({"ttl_s": 60, "pad": "x" * (MIB - 100)})
    assert len(padded) <= MIB
    response = httpx.post(f"{base}/runs/no-such-run/tokens", content=padded, headers=JSON, timeout=WAIT)
    assert response.status_code == 404, response.text


def test_the_body_cap_is_configurable(small: tuple[str, Path]) -> None:
    url, _ = small
    over = httpx.post(f"{url}/runs/no-such-run/tokens", content=b" " * (SMALL_BODY + 1), headers=JSON, timeout=WAIT)
    assert over.status_code == 413
    under = httpx.post(f"{url}/runs/no-such-run/tokens", content=b"{}" + b" " * 4000, headers=JSON, timeout=WAIT)
    assert under.status_code == 404, under.text


# 8. ?token= on SSE only; strong tokens beyond loopback; NaN is 422; idle connections closed


def test_a_query_token_counts_on_sse_endpoints_only(base: str) -> None:
    query = {"token": TOKEN}
    with httpx.Client(base_url=base, timeout=WAIT) as http:
        for method, path in [("GET", "/runs"), ("GET", "/metrics"), ("GET", "/streams"), ("POST", "/runs"),
                             ("GET", "/streams/a/records"), ("GET", "/runs/x"), ("GET", "/registry/agents"),
                             ("POST", "/runs/x/cancel"), ("GET", "/runs/x/events/extra")]:  # fmt: skip
            assert http.request(method, path, params=query).status_code == 401, (method, path)
        assert http.get("/runs", headers=ADMIN).status_code == 200  # the header works everywhere
        for path in ("/streams/some/stream/events", "/runs/no-such-run/events"):
            with http.stream("GET", path, params=query) as response:
                assert response.status_code == 200, path
                assert response.headers["content-type"].startswith("text/event-stream")
                assert next(response.iter_lines()) == "retry: 1000"
        assert http.get("/runs/no-such-run/live", params=query).status_code == 404  # past auth: no such run
        assert http.get("/streams/some/stream/events", params={"token": "wrong"}).status_code == 401
        assert http.get("/").status_code == 200  # the dashboard page: static, takes ?token= for its own script
        assert http.get("/health").status_code == 200


def test_a_weak_token_is_refused_beyond_loopback_before_binding(tmp_path: Path) -> None:
    # the port is held on loopback, so a serve that got past the check could not bind 0.0.0.0 either
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])

        def serve_beyond_loopback(token: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'w.db'}", "serve",
                 "--host", "0.0.0.0", "--port", port],
                env={**os.environ, "PARALLAX_TOKEN": token}, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        for token, says in [("short-token", "weak PARALLAX_TOKEN (11 characters)"),
                            ("0123456789abcde", "weak PARALLAX_TOKEN (15 characters)"),
                            (" " * 24, "without PARALLAX_TOKEN"), ("", "without PARALLAX_TOKEN")]:  # fmt: skip
            result = serve_beyond_loopback(token)
            assert result.returncode == 2, (token, result.stderr)
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
            assert result.stderr.startswith("error: refusing to listen on 0.0.0.0 "), result.stderr
            assert says in result.stderr, result.stderr
            assert result.stdout == ""
        strong = serve_beyond_loopback("a-strong-token-of-32-characters!")  # passes the check, then cannot bind
        assert strong.returncode not in (0, 2) and "PARALLAX_TOKEN" not in strong.stderr, strong.stderr


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/runs/no-such-run/fork", '{"at": NaN}'),
        ("/runs/no-such-run/tokens", '{"ttl_s": Infinity}'),
        ("/runs/no-such-run/tokens", '{"ttl_s": -Infinity}'),
        ("/runs/no-such-run/tokens", '{"ttl_s": 1e999}'),
        ("/runs", '{"target": "x.yaml", "inputs": {"n": NaN}}'),
        (
            "/registry/agents",
            '{"id": "a", "capabilities": ["x"], "agent": {"kind": "command", "command": "true"},'
            ' "meta": {"deep": [1, {"n": NaN}]}}',
        ),
    ],
)
def test_nan_and_infinity_are_422_never_500(base: str, path: str, body: str) -> None:
    response = httpx.post(f"{base}{path}", content=body, headers=JSON, timeout=WAIT)
    assert response.status_code == 422, response.text
    assert "numbers must be finite" in response.json()["detail"]
    listed = httpx.get(f"{base}/registry/agents", params={"all": True}, headers=ADMIN, timeout=WAIT)
    assert listed.status_code == 200 and listed.json() == []  # nothing was stored


def test_idle_connections_are_closed_and_streams_are_not(small: tuple[str, Path]) -> None:
    url, db = small
    # connected, nothing sent
    with connect(url) as sock:
        assert closed_within(sock, WAIT)
    # headers trickled a byte at a time: closed long before they would be complete
    with connect(url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while not closed and time.monotonic() - started < WAIT:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            closed = closed_within(sock, 0.2)
        assert time.monotonic() - started < WAIT, "the trickling client kept its connection"
    # a body that stops coming: 408, closed
    with connect(url) as sock:
        sock.sendall(request_head("POST", "/runs/x/tokens", f"Authorization: Bearer {TOKEN}",
                                  "Content-Type: application/json", "Content-Length: 100") + b'{"ttl_s"')  # fmt: skip
        status, head, _ = read_response(sock)
        assert status == 408, head
        assert closed_within(sock, WAIT)
    # kept alive after a response, then idle: closed
    with connect(url) as sock:
        sock.sendall(request_head("GET", "/health"))
        assert read_response(sock)[0] == 200
        assert closed_within(sock, WAIT)
    # an SSE stream quiet for longer than the timeout is not cut: a record appended later arrives
    with httpx.stream("GET", f"{url}/streams/quiet/one/events", headers=ADMIN, timeout=WAIT) as response:
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        time.sleep(IDLE_S * 3)  # the subject of the test: time passing, not synchronisation

        async def append() -> None:
            async with SqliteStore(db) as store:
                await store.append("quiet/one", AppendInput([AppendRecord(body=b'{"n": 1}')]))

        asyncio.run(append())
        data = next(line for line in lines if line.startswith("data: "))
        assert json.loads(data[6:])["body"] == {"n": 1}


# 10. patterns and targets compiled off the event loop

WAIT_FOR_RELEASE = """
import time
from pathlib import Path

def wait():
    here = Path(__file__).parent
    (here / "started").write_text("")
    deadline = time.monotonic() + 120
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""


@pytest.mark.parametrize("kind", ["run from a target", "run from a pattern", "schedule from a pattern"])
def test_a_slow_compile_stalls_no_other_request(base: str, tmp_path: Path, kind: str) -> None:
    slow = tmp_path / "slow.py"
    if kind == "run from a target":  # the pattern author's plan function is slow
        slow.write_text(WAIT_FOR_RELEASE + "\ndef plan():\n    wait()\n    raise ValueError('released')\n")
        path, body = "/runs", {"target": f"{slow}:plan"}
    else:  # a pattern whose output model takes long to import
        slow.write_text(WAIT_FOR_RELEASE + "\nwait()\nraise RuntimeError('released')\n")
        pattern = f"pattern: fanout\nname: slow\nagents:\n  a: {{kind: command, command: 'true', output: '{slow}:M'}}\n"
        path = "/runs" if kind.startswith("run") else "/schedules"
        body = {"pattern": pattern} if path == "/runs" else {"id": "slow", "cron": "0 3 * * *", "pattern": pattern}
    with ThreadPoolExecutor(1) as pool:
        try:
            slow_request = pool.submit(httpx.post, f"{base}{path}", json=body, headers=ADMIN, timeout=240)
            deadline = time.monotonic() + 60
            while not (tmp_path / "started").exists():
                if slow_request.done():
                    raise AssertionError(f"the slow request ended first: {slow_request.result().text}")
                assert time.monotonic() < deadline, "the slow compile never started"
                time.sleep(0.02)
            health = httpx.get(f"{base}/health", timeout=WAIT)
            runs = httpx.get(f"{base}/runs", headers=ADMIN, timeout=WAIT)
            assert health.status_code == 200 and runs.status_code == 200
            assert not slow_request.done()  # both answered while the compile was still going
        finally:
            (tmp_path / "release").write_text("")
        response = slow_request.result(timeout=240)
    assert response.status_code == 400 and "released" in response.text, response.text
