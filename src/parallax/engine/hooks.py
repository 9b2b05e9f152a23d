"""Hooks: commands run on a run's events, configured in parallax.toml (`[hooks]`).

    on_step_complete   a step's output is recorded, or it failed for good, or was skipped
    on_task_complete   a task of a task graph succeeded or failed
    on_merge           a merge step's output is recorded
    on_conflict        a merge found a conflict
    on_finish          the run finished (any status)

A hook is a shell command (a string, run by /bin/sh) or an argv list. It gets the event as JSON
on stdin (`{"hook", "run", "event": {type, step, agent, seq, timestamp, data}}`) and
PARALLAX_RUN_ID / PARALLAX_HOOK in its environment. Hooks run in the background, at most one
per event, each under `timeout_s`; what became of each (exit code, the tail of its stderr,
duration) is recorded on `runs/<run>/hooks`. A failing hook is recorded, never fatal: the run
does not wait for, or fail because of, its hooks (it waits for running ones before it returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.runstreams import RunStreams
from parallax.core.tasks import TASK_FAILED, TASK_SUCCEEDED
from parallax.settings import HooksConfig
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record

HOOK_RAN = "hook.ran"
HOOK_FAILED = "hook.failed"


def hooks_stream(run_id: str) -> str:
    return RunStreams(run_id).hooks


class Hooks:
    def __init__(
        self,
        store: StreamStore,
        run_id: str,
        config: HooksConfig,
        *,
        step_kind: Callable[[str], str | None] = lambda _: None,
        cwd: Path | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.config = config
        self.step_kind = step_kind
        self.cwd = cwd
        self._running: set[asyncio.Task[None]] = set()

    def names_for(self, event: Event) -> list[str]:
        """Which hooks an event triggers."""
        names: list[str] = []
        if event.type == ev.STEP_OUTPUT:
            names.append("on_step_complete")
            if event.step is not None and self.step_kind(event.step) == "merge":
                names.append("on_merge")
        elif (event.type == ev.STEP_FAILED and event.data.get("final", True)) or event.type == ev.STEP_SKIPPED:
            names.append("on_step_complete")
        elif event.type in (TASK_SUCCEEDED, TASK_FAILED):
            names.append("on_task_complete")
        elif event.type == ev.CONFLICT_FOUND:
            names.append("on_conflict")
        elif event.type == ev.RUN_FINISHED:
            names.append("on_finish")
        return [name for name in names if getattr(self.config, name)]

    def __call__(self, event: Event) -> None:
        """See one durable control event (sync: called from the control log)."""
        for name in self.names_for(event):
            task = asyncio.get_running_loop().create_task(self._run(name, event))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait for the hooks still running (each is bounded by its timeout)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _run(self, name: str, event: Event) -> None:
        command = getattr(self.config, name)
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        payload = {
            "hook": name,
            "run": self.run_id,
            "event": {
                "type": event.type, "step": event.step, "agent": event.agent, "seq": event.seq_num,
                "timestamp": event.timestamp, "data": event.data,
            },
        }  # fmt: skip
        env = {**os.environ, "PARALLAX_RUN_ID": self.run_id, "PARALLAX_HOOK": name}
        started = time.monotonic()
        outcome: dict[str, Any] = {"hook": name, "argv": argv, "event_type": event.type, "event_seq": event.seq_num}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except OSError as e:
            outcome.update(error=f"cannot start: {e}")
        else:
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    _, stderr = await process.communicate(json.dumps(payload, default=str).encode())
                outcome.update(exit=process.returncode, stderr=stderr.decode(errors="replace")[-2000:])
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                outcome.update(error=f"timed out after {self.config.timeout_s:g}s")
        outcome["duration_ms"] = int((time.monotonic() - started) * 1000)
        failed = "error" in outcome or outcome.get("exit") != 0
        record = Event(HOOK_FAILED if failed else HOOK_RAN, outcome, step=event.step)
        try:
            await self.store.append(hooks_stream(self.run_id), AppendInput([event_record(record)]))
        except Exception:  # the store is away: a hook's record is not worth failing anything for
            return
