"""Item 12, process output: an agent's or verify command's output can be anything the child
writes. Lines of any length reach the callbacks and the kept copy whole; what is kept of a
stream is bounded (head and tail, with the drop counted and marked) while the pipe is drained to
the end; odd bytes survive; and on timeout, cancellation or a failing callback the process group
dies, the process is reaped and no pipe or transport is left open (ResourceWarning)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from parallax.agents.command import parse_output
from parallax.agents.process import STDERR_LIMIT, STDOUT_LIMIT, ProcessResult, run_process
from parallax.core.errors import AgentTimeout
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.streams.sqlite import SqliteStore
from tests.waiting import async_wait_until

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def run(code: str, **limits: int) -> tuple[ProcessResult, list[str], list[str]]:
    out: list[str] = []
    err: list[str] = []
    result = await run_process(
        python(code), stdin=None, env=ENV, cwd=None, timeout_s=120, on_stdout_line=out.append,
        on_stderr_line=err.append, **limits,
    )  # fmt: skip
    return result, out, err


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaps, in a container, is dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def assert_nothing_left_open() -> None:
    """Collect garbage and fail on any unclosed transport, pipe or running subprocess object."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks


async def test_a_200_kib_json_line_is_captured_whole_and_parses() -> None:
    code = "import json, sys; sys.stdout.write(json.dumps({'result': 'x' * 204800, 'n': [1, 2]}) + '\\n')"
    result, out, _ = await run(code)
    expected = {"result": "x" * 204800, "n": [1, 2]}
    assert result.returncode == 0
    assert json.loads(result.stdout) == expected
    assert parse_output(result.stdout) == expected  # what a command agent makes of it
    assert [json.loads(line) for line in out] == [expected]  # the callback (a cli parser) sees it whole
    assert not result.truncated and result.dropped == {}


async def test_a_command_agent_whose_json_result_is_one_long_line_succeeds(tmp_path: Path) -> None:
    script = 'python3 -c \'import json; print(json.dumps({"blob": "y" * 150000}))\''
    plan = Plan(
        name="long-line", steps=(Step(id="cmd", kind="agent", agent=AgentSpec(kind="command", command=script)),)
    )
    async with SqliteStore(tmp_path / "engine.db") as store:
        state = await api.run_plan(store, plan)
    assert state.status == "succeeded", state.steps["cmd"].error
    assert state.result == {"blob": "y" * 150000}


async def test_odd_bytes_reach_the_callbacks_and_the_kept_copy() -> None:
    payload = (
        b"ok\n" + b"bad \xff\xfe utf8\n" + b"nul \x00 inside\n" + b"\xe2\x82\xac euro\r\n" + b"z" * 100_000 + b"\n"
        + b"last line without a newline \xe2\x82"
    )  # fmt: skip
    code = f"import sys; sys.stdout.buffer.write({payload!r}); sys.stderr.buffer.write(b'e\\x00rr \\xff')"
    result, out, err = await run(code)
    assert result.stdout == payload.decode("utf-8", "replace")
    assert out == [line.decode("utf-8", "replace") for line in payload.split(b"\n")]
    assert out[2] == "nul \x00 inside" and out[3] == "\u20ac euro\r" and "\ufffd" in out[1]
    assert out[-1] == "last line without a newline \ufffd"
    assert err == ["e\x00rr \ufffd"] and result.stderr == "e\x00rr \ufffd"


async def test_a_line_past_the_line_limit_comes_in_bounded_pieces_and_is_kept_whole() -> None:
    line = "\u20ac" * 5000  # 15,000 bytes of 3-byte characters
    code = f"import sys; sys.stdout.write({line!r} + '\\n'); sys.stdout.write('after\\n')"
    result, out, _ = await run(code, line_limit=1000)
    pieces, after = out[:-1], out[-1]
    assert after == "after"
    assert len(pieces) > 1 and all(len(p.encode()) <= 1000 for p in pieces)
    assert "".join(pieces) == line  # cut between characters: no U+FFFD, nothing lost
    assert result.stdout == line + "\nafter\n"


async def test_past_the_cap_the_head_and_the_tail_are_kept_and_the_drop_is_marked() -> None:
    lines = 100_000
    code = f"import sys\nfor i in range({lines}): sys.stdout.write(f'line {{i:06}}\\n')\nsys.stderr.write('e' * 5000)"
    data = "".join(f"line {i:06}\n" for i in range(lines)).encode()
    cap = 64 * 1024
    result, out, err = await run(code, stdout_limit=cap, stderr_limit=1000)
    assert len(out) == lines and out[-1] == f"line {lines - 1:06}"  # every line still reached the callback
    assert result.stdout_dropped == len(data) - cap
    marker = f"[parallax: {len(data) - cap} bytes of stdout dropped here, past the 64 KiB cap]\n"
    assert result.stdout == data[: cap // 2].decode() + "\n" + marker + data[-cap // 2 :].decode()
    assert result.stdout.endswith(f"line {lines - 1:06}\n")  # a tool's final result event survives
    assert (
        result.stderr
        == "e" * 500 + "\n[parallax: 4000 bytes of stderr dropped here, past the 1000 B cap]\n" + "e" * 500
    )
    assert err == ["e" * 5000]
    assert result.truncated and result.dropped == {"stdout_dropped": len(data) - cap, "stderr_dropped": 4000}


MEMORY_CHILD = r"""
import asyncio, json, resource, sys
from parallax.agents.process import run_process

PRODUCER = "import sys\nchunk = b'0123456789abcdefghijklmnopqrs\\n' * 4096\nfor _ in range(256): sys.stdout.buffer.write(chunk)\n"

async def main():
    lines = 0
    def count(line):
        nonlocal lines
        lines += 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await run_process([sys.executable, "-c", PRODUCER], stdin=None, env={}, cwd=None, timeout_s=240,
                               on_stdout_line=count)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_kib": after - before, "lines": lines, "kept": len(result.stdout),
                      "dropped": result.stdout_dropped, "code": result.returncode,
                      "tail": result.stdout[-60:]}))

asyncio.run(main())
"""


def test_30_mb_of_output_keeps_memory_bounded() -> None:
    total = 30 * 4096 * 256  # 30 MiB in 1,048,576 lines
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True, timeout=280, check=True)
    report = json.loads(done.stdout)
    assert report["code"] == 0
    assert report["lines"] == total // 30
    assert report["dropped"] == total - STDOUT_LIMIT
    assert STDOUT_LIMIT <= report["kept"] <= STDOUT_LIMIT + 200  # + the marker line
    assert report["tail"].endswith("0123456789abcdefghijklmnopqrs\n")
    # Peak RSS grows by about the kept copy (bytes, then text: ~21 MiB measured), not with the
    # output: before the cap these 30 MiB of short lines grew it by ~110 MiB.
    assert report["grew_kib"] < 64 * 1024, report
    assert (STDOUT_LIMIT, STDERR_LIMIT) == (8 * 1024 * 1024, 2 * 1024 * 1024)  # the defaults


FLOOD_AND_HANG = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # only SIGKILL ends it
    "child = subprocess.Popen(['sleep', '300'])\n"
    "print(child.pid, flush=True)\n"
    "while True:\n"
    "    sys.stdout.write('flood ' * 100 + '\\n'); sys.stderr.write('err ' * 100 + '\\n')\n"
)


async def test_timeout_kills_the_group_reaps_and_closes_everything() -> None:
    first: list[str] = []
    with pytest.raises(AgentTimeout):
        await run_process(
            python(FLOOD_AND_HANG), stdin=b"x" * 1_000_000, env=ENV, cwd=None, timeout_s=1.0,
            on_stdout_line=lambda line: first.append(line) if not first else None,
        )  # fmt: skip
    grandchild = int(first[0])
    await async_wait_until(lambda: not alive(grandchild), timeout=30, what="the grandchild to die")
    assert_nothing_left_open()


async def test_cancellation_kills_the_group_reaps_and_closes_everything() -> None:
    first: list[str] = []
    lines = 0

    def on_line(line: str) -> None:
        nonlocal lines
        lines += 1
        if not first:
            first.append(line)

    task = asyncio.create_task(
        run_process(python(FLOOD_AND_HANG), stdin=None, env=ENV, cwd=None, timeout_s=None, on_stdout_line=on_line)
    )
    # cancelled in full flood: once it has sent a good many lines
    await async_wait_until(lambda t=task: lines >= 1000 or t.done(), timeout=60, what="the child to flood")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    await async_wait_until(lambda: not alive(int(first[0])), timeout=30, what="the grandchild to die")
    assert_nothing_left_open()


async def test_a_failing_callback_fails_the_run_and_ends_the_process() -> None:
    seen: list[str] = []

    def parser(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            raise ValueError("the parser gave up")

    with pytest.raises(ValueError, match="the parser gave up"):
        await run_process(python(FLOOD_AND_HANG), stdin=None, env=ENV, cwd=None, timeout_s=60, on_stdout_line=parser)
    assert len(seen) == 2  # no callback after the failure
    await async_wait_until(lambda: not alive(int(seen[0])), timeout=30, what="the grandchild to die")
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing of the run is left reading
    assert_nothing_left_open()
