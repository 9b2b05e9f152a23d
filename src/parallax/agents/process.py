"""Running an agent's subprocess: its own process group, an allow-listed environment, output
streamed line by line, and on timeout or cancellation the whole group killed.

Guarantees:

- Lines of any length. Output is read in chunks and split into lines here (no StreamReader
  line limit). Each callback gets every line, without its "\\n", decoded as UTF-8 (invalid bytes
  become U+FFFD, NUL bytes are kept), the last line too when it has no newline. A line is passed
  whole up to `line_limit` bytes (default 8 MiB, so one JSON event per line reaches the parsers
  whole); a longer line is passed in consecutive pieces of at most `line_limit` bytes, cut
  between UTF-8 characters, which joined give the line back.
- Bounded memory. What is kept of each stream (`ProcessResult.stdout` / `.stderr`) is all of it
  up to its cap (`stdout_limit`, default 8 MiB; `stderr_limit`, default 2 MiB). Past the cap
  the first half of the cap and the last half are kept (the start of the output and its end,
  where tools put their result), with one marker line between them saying how many bytes were
  dropped there; `stdout_dropped` / `stderr_dropped` count them and `truncated` says whether any
  were. The pipes are drained to the end regardless, so the child never blocks on a full pipe,
  and the callbacks still see every line: only the kept copy is bounded. Peak memory per
  process is about the two caps plus one pending line per stream.
- Clean ends. The run is over when the process has exited and both pipes are closed. On
  timeout, cancellation, or an exception raised by a callback, SIGTERM and then SIGKILL go to
  the whole process group (grandchildren too), the process is reaped, and every pipe and the
  transport are closed before the error propagates (AgentTimeout, CancelledError, the
  callback's own exception); no callback is called after `run_process` has returned or raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallax.core.errors import AgentFailed, AgentTimeout

# Passed through from the parent unless the agent spec says otherwise; secrets never are.
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "HOME", "TMPDIR")
KILL_GRACE_S = 2.0
MIB = 1024 * 1024
STDOUT_LIMIT = 8 * MIB  # bytes of stdout kept in ProcessResult.stdout
STDERR_LIMIT = 2 * MIB  # bytes of stderr kept in ProcessResult.stderr
LINE_LIMIT = 8 * MIB  # longest line passed whole to a callback; longer ones come in pieces this size


def agent_environment(granted: Sequence[str], parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The base allow-list plus the variables granted by name; nothing else of the parent."""
    source = os.environ if parent is None else parent
    return {name: source[name] for name in (*BASE_ENV, *granted) if name in source}


@dataclass
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str
    stdout_dropped: int = 0  # bytes of stdout not in `stdout` (past its cap; a marker line says where)
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.stdout_dropped or self.stderr_dropped)

    @property
    def dropped(self) -> dict[str, int]:
        """The bytes dropped per stream, for a record (empty when nothing was)."""
        counts = {"stdout_dropped": self.stdout_dropped, "stderr_dropped": self.stderr_dropped}
        return {name: n for name, n in counts.items() if n}


def _size(n: int) -> str:
    for unit, scale in (("MiB", MIB), ("KiB", 1024)):
        if n and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _utf8_cut(buffer: bytes | bytearray, at: int) -> int:
    """`at`, moved back by at most 3 bytes so as not to split a UTF-8 character (kept as it is
    when the bytes there are not UTF-8)."""
    for cut in range(at, max(0, at - 3) - 1, -1):
        if cut > 0 and (cut >= len(buffer) or buffer[cut] & 0xC0 != 0x80):  # not a continuation byte
            return cut
    return at


class _Kept:
    """What is kept of one stream: all of it up to `limit` bytes, else its first and last halves."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = max(0, limit)
        self.head = bytearray()
        self.head_room = self.limit // 2
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.tail_room = self.limit - self.head_room
        self.dropped = 0

    def add(self, data: bytes) -> None:
        if len(self.head) < self.head_room:
            take = self.head_room - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size > self.tail_room:
            excess = self.tail_size - self.tail_room
            first = self.tail[0]
            if len(first) <= excess:
                self.tail.popleft()
                cut = len(first)
            else:
                self.tail[0] = first[excess:]
                cut = excess
            self.tail_size -= cut
            self.dropped += cut

    def text(self) -> str:
        head, tail = bytes(self.head), b"".join(self.tail)
        if not self.dropped:
            return (head + tail).decode("utf-8", "replace")
        newline = "\n" if head and not head.endswith(b"\n") else ""
        marker = f"[parallax: {self.dropped} bytes of {self.name} dropped here, past the {_size(self.limit)} cap]\n"
        return head.decode("utf-8", "replace") + newline + marker + tail.decode("utf-8", "replace")


class _Lines:
    """Splits a stream into lines for a callback (see the module docstring for long lines)."""

    def __init__(self, callback: Callable[[str], None], limit: int) -> None:
        self.callback = callback
        self.limit = max(4, limit)
        self.pending = bytearray()

    def feed(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if not self.pending and end - start <= self.limit:
                self._deliver(data[start:end])
            else:
                self.pending += data[start:end]
                self._pieces()
                self._deliver(bytes(self.pending))
                self.pending.clear()
            start = end + 1
        if start < len(data):
            self.pending += data[start:]
            self._pieces()

    def end(self) -> None:
        if self.pending:
            self._deliver(bytes(self.pending))
            self.pending.clear()

    def _pieces(self) -> None:
        # > not >=: a line of exactly `limit` bytes still goes whole when its newline comes
        while len(self.pending) > self.limit:
            cut = _utf8_cut(self.pending, self.limit)
            self._deliver(bytes(self.pending[:cut]))
            del self.pending[:cut]

    def _deliver(self, raw: bytes) -> None:
        self.callback(raw.decode("utf-8", "replace"))


class _Protocol(asyncio.SubprocessProtocol):
    """Receives the child's output as it comes: kept (bounded) and split into lines."""

    def __init__(self, pipes: set[int], kept: dict[int, _Kept], lines: dict[int, _Lines]) -> None:
        self.open_pipes = pipes
        self.kept = kept
        self.lines = lines
        self.error: BaseException | None = None  # raised by a callback
        self.closed = False  # run_process is over: no more callbacks
        self.exited = asyncio.Event()
        self.settled = asyncio.Event()  # the process exited and every pipe closed, or a callback failed
        self.pipes_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if fd in self.kept:
            self.kept[fd].add(raw)
        if fd in self.lines:
            self._guard(self.lines[fd].feed, raw)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open_pipes.discard(fd)
        if not self.open_pipes:
            self.pipes_closed.set()
        if fd in self.lines:
            self._guard(self.lines[fd].end)

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.settled.set()

    def _guard(self, call: Callable[..., None], *args: Any) -> None:
        if self.closed or self.error is not None:
            return
        try:
            call(*args)
        except Exception as e:  # the run fails with it, once the process group is down
            self.error = e
            self.settled.set()


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str],
    cwd: Path | None,
    timeout_s: float | None,
    on_stdout_line: Callable[[str], None] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    stdout_limit: int = STDOUT_LIMIT,
    stderr_limit: int = STDERR_LIMIT,
    line_limit: int = LINE_LIMIT,
) -> ProcessResult:
    """Run `argv` to completion under the guarantees of the module docstring. On timeout (or
    cancellation) SIGTERM then SIGKILL go to the whole process group, so grandchildren die too,
    and AgentTimeout (or CancelledError) follows."""
    loop = asyncio.get_running_loop()
    kept = {1: _Kept("stdout", stdout_limit), 2: _Kept("stderr", stderr_limit)}
    lines = {fd: _Lines(cb, line_limit) for fd, cb in ((1, on_stdout_line), (2, on_stderr_line)) if cb is not None}
    protocol = _Protocol({0, 1, 2} if stdin is not None else {1, 2}, kept, lines)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,  # its own process group: killpg reaches everything it started
    )
    pid = transport.get_pid()
    scope = asyncio.timeout(timeout_s)
    try:
        try:
            feed = transport.get_pipe_transport(0)
            if stdin is not None and isinstance(feed, asyncio.WriteTransport):
                feed.write(stdin)  # a child that exits unread gets EPIPE: its pipe just closes
                feed.close()  # after what was written is flushed
            async with scope:
                await protocol.settled.wait()
            if protocol.error is not None:
                raise protocol.error
        except BaseException:
            timed_out = scope.expired()
            _kill_group(pid, signal.SIGTERM)
            await _wait(protocol.exited, KILL_GRACE_S)
            _kill_group(pid, signal.SIGKILL)
            await _wait(protocol.exited, KILL_GRACE_S)
            if timed_out:
                raise AgentTimeout(
                    f"{argv[0]} ran past its timeout of {timeout_s:g}s; its process group was killed"
                ) from None
            raise
    finally:
        protocol.closed = True
        # The leader may exit while children it left behind keep running: end them as well.
        _kill_group(pid, signal.SIGKILL)
        feed = transport.get_pipe_transport(0)
        if isinstance(feed, asyncio.WriteTransport) and feed.get_write_buffer_size():
            feed.abort()  # drop stdin the child never read
        transport.close()  # closes the pipes (a no-op when they are closed already)
        if not protocol.pipes_closed.is_set():
            await _wait(protocol.pipes_closed, KILL_GRACE_S)  # their closing runs on the loop
    returncode = transport.get_returncode()
    assert returncode is not None
    return ProcessResult(
        returncode, kept[1].text(), kept[2].text(), stdout_dropped=kept[1].dropped, stderr_dropped=kept[2].dropped
    )


def tail_text(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def failed(argv0: str, result: ProcessResult) -> AgentFailed:
    detail = tail_text(result.stderr.strip() or result.stdout.strip()) or "(no output)"
    if result.truncated:
        detail += f" ({result.stdout_dropped} bytes of stdout, {result.stderr_dropped} of stderr dropped)"
    return AgentFailed(f"{argv0} exited with {result.returncode}: {detail}", retryable=True)
