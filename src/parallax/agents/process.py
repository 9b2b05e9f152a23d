"""Running an agent's subprocess: its own process group, an allow-listed environment, stdout
streamed line by line, and on timeout or cancellation the whole group killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from parallax.core.errors import AgentFailed, AgentTimeout

# Passed through from the parent unless the agent spec says otherwise; secrets never are.
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "HOME", "TMPDIR")
KILL_GRACE_S = 2.0


def agent_environment(granted: Sequence[str], parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The base allow-list plus the variables granted by name; nothing else of the parent."""
    source = os.environ if parent is None else parent
    return {name: source[name] for name in (*BASE_ENV, *granted) if name in source}


@dataclass
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str],
    cwd: Path | None,
    timeout_s: float | None,
    on_stdout_line: Callable[[str], None] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
) -> ProcessResult:
    """Run `argv` to completion. On timeout (or cancellation) SIGTERM then SIGKILL go to the
    whole process group, so grandchildren die too, and AgentTimeout (or CancelledError) follows."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,  # its own process group: killpg reaches everything it started
    )
    out_lines: list[str] = []
    err_lines: list[str] = []

    async def pump(
        stream: asyncio.StreamReader | None, sink: list[str], callback: Callable[[str], None] | None
    ) -> None:
        assert stream is not None
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace")
            sink.append(line)
            if callback is not None:
                callback(line.rstrip("\n"))

    async def feed() -> None:
        if stdin is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()

    async def everything() -> int:
        await asyncio.gather(
            feed(), pump(proc.stdout, out_lines, on_stdout_line), pump(proc.stderr, err_lines, on_stderr_line)
        )
        return await proc.wait()

    try:
        returncode = await asyncio.wait_for(everything(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as e:
        _kill_group(proc, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
        _kill_group(proc, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
        if isinstance(e, asyncio.CancelledError):
            raise
        raise AgentTimeout(f"{argv[0]} ran past its timeout of {timeout_s:g}s; its process group was killed") from None
    finally:
        # The leader may exit while children it left behind keep running: end them as well.
        _kill_group(proc, signal.SIGKILL)
    return ProcessResult(returncode, "".join(out_lines), "".join(err_lines))


def tail_text(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def failed(argv0: str, result: ProcessResult) -> AgentFailed:
    detail = tail_text(result.stderr.strip() or result.stdout.strip()) or "(no output)"
    return AgentFailed(f"{argv0} exited with {result.returncode}: {detail}", retryable=True)
