"""Suite-wide guards: warnings are errors (pyproject), nothing here may reach a network service
or a paid model API, and no test leaves a subprocess or a pipe behind."""

from __future__ import annotations

import os
import subprocess
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from tests.processes import reap


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A test never falls back to the developer's store or model.
    for name in list(os.environ):
        if name.startswith("PARALLAX_"):
            monkeypatch.delenv(name)


# No test may reach a model provider: pydantic-ai refuses every real model request (even to
# loopback) unless a test re-allows it explicitly for a fake server it started itself.
import pydantic_ai.models  # noqa: E402

pydantic_ai.models.ALLOW_MODEL_REQUESTS = False


# Every subprocess a test starts (itself, or through the product: asyncio's subprocesses are
# Popen objects too) must be waited for and have its pipes closed by the end of the test. One
# that is not is reported as a ResourceWarning whenever the garbage collector gets to it: as an
# error in some later, unrelated test. Here it fails the test that left it, and is cleaned up.
_started: list[weakref.ReferenceType[subprocess.Popen[Any]]] | None = None
_popen_init = subprocess.Popen.__init__


def _recorded_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    _popen_init(self, *args, **kwargs)
    if _started is not None:
        _started.append(weakref.ref(self))


subprocess.Popen.__init__ = _recorded_init  # type: ignore[method-assign]


def _exited_unwaited(process: subprocess.Popen[Any]) -> bool:
    """Ended (or reaped by someone else), while its Popen still says it runs."""
    if process.returncode is not None:
        return False
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


@pytest.fixture(autouse=True)
def _no_subprocess_left_behind() -> Iterator[None]:
    global _started
    started: list[weakref.ReferenceType[subprocess.Popen[Any]]] = []
    _started = started
    try:
        yield
    finally:
        _started = None
    left = []
    for ref in started:
        process = ref()
        if process is None:
            continue
        open_pipes = [p for p in (process.stdin, process.stdout, process.stderr) if p is not None and not p.closed]
        if open_pipes or _exited_unwaited(process):  # (one still running without pipes may be a fixture's server)
            left.append(process.args)
            reap(process)
    assert not left, f"the test left these subprocesses unwaited or with open pipes: {left}"
