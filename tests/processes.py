"""Subprocesses a test starts end with the test: killed if still running, waited for, and their
pipes closed, whatever happened (a Popen left running or with an open pipe is reported as a
ResourceWarning whenever the garbage collector gets to it: in a later, unrelated test)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, AnyStr


def reap(process: subprocess.Popen[Any], *, group: bool = False, timeout: float = 60.0) -> None:
    """SIGKILL `process` (its whole process group with `group`, for one started with
    start_new_session=True) unless it has exited, wait for it and close its pipes. Idempotent."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
    try:
        process.wait(timeout=timeout)
    finally:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # unflushed input to a process that is gone
                process.stdin.close()


def stop(process: subprocess.Popen[Any], *, timeout: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if it is still running after `timeout`; then as `reap`."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    reap(process)


def read_line(pipe: IO[AnyStr], *, timeout: float = 120.0) -> AnyStr:
    """The next line from a child's pipe, or AssertionError once `timeout` seconds have passed
    without one (the read goes on in a thread until the child, reaped, closes the pipe)."""
    lines: queue.Queue[AnyStr] = queue.Queue()
    threading.Thread(target=lambda: lines.put(pipe.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line from the child within {timeout:g}s") from None


def exit_code(process: subprocess.Popen[Any], output: Path, *, timeout: float = 120.0) -> int:
    """Wait for `process` (started with `-X faulthandler`, writing to `output`) to exit and
    return its code. If it has not exited in time, SIGABRT makes the faulthandler write every
    thread's stack to `output`, and the failure shows where it hung."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        raise AssertionError(f"{process.args!r} did not exit in {timeout:g}s:\n{output.read_text()}") from None
