"""The agent boundary: an agent takes a context and returns a contribution.

An agent never holds the store. Its `AgentContext` carries exactly its grants: it may write
its own stream (through `emit` and `log`), read the streams it is granted (`read`), see its
input, its remaining budget, its deadline and a cancellation signal. Reading anything else
raises GrantDenied.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from parallax.core import events as ev
from parallax.core.errors import StreamNotFound
from parallax.core.events import Event
from parallax.core.grants import Grants
from parallax.core.plan import AgentSpec
from parallax.streams.base import AppendInput, AppendRecord, Record, StreamStore
from parallax.streams.folded import event_record

EMIT_PIECE = 128 * 1024  # characters per chunk record: 6 bytes per escaped character stays under 1 MiB


@dataclass
class AgentResult:
    """What one successful attempt produced. `output` is JSON-able (a model's dump, or text)."""

    output: Any
    confidence: float | None = None
    usage: dict[str, Any] = field(default_factory=dict[str, Any])
    model: BaseModel | None = None  # the validated model `output` was dumped from, when there is one
    cached: bool = False  # served from the run's result cache: nothing ran


@dataclass(frozen=True)
class BudgetView:
    """What is left of the run's budget when the attempt starts (None: no limit)."""

    tokens_left: int | None = None
    cost_left_usd: float | None = None


class AgentLog:
    """An agent's own stream, written in order by one background flusher so that emitting a
    chunk never waits for the disk; `flush()` waits until everything emitted is durable."""

    def __init__(self, store: StreamStore, stream: str, agent: str, step: str) -> None:
        self.store = store
        self.stream = stream
        self.agent = agent
        self.step = step
        self._pending: deque[AppendRecord] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def write(self, event_type: str, data: Mapping[str, Any]) -> None:
        self._pending.append(event_record(Event(event_type, dict(data), step=self.step, agent=self.agent)))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending:
            batch: list[AppendRecord] = []
            size = 0
            while self._pending and len(batch) < 1000:
                nxt = self._pending[0].metered_bytes
                if batch and size + nxt > 1024 * 1024:
                    break
                batch.append(self._pending.popleft())
                size += nxt
            try:
                await self.store.append(self.stream, AppendInput(batch))
            except Exception as e:  # kept, and raised by flush(): the attempt's log is incomplete
                self.error = e
                return

    async def flush(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self.error is not None:
            raise self.error


class AgentContext:
    """Everything one attempt of one agent may see and do."""

    def __init__(
        self,
        *,
        run_id: str,
        step_id: str,
        agent: str,
        attempt: int,
        input: dict[str, Any],
        prompt: str | None,
        output_type: type[BaseModel] | None,
        grants: Grants,
        store: StreamStore,
        log: AgentLog,
        budget: BudgetView,
        deadline: float | None,
        cancelled: asyncio.Event,
        env: Mapping[str, str],
        workdir: Path | None = None,
        wrap: Callable[[Sequence[str], Mapping[str, str]], list[str]] | None = None,
    ) -> None:
        self.wrap = wrap  # how a process the agent starts is wrapped (the sandbox), if at all
        self.run_id = run_id
        self.step_id = step_id
        self.agent = agent
        self.attempt = attempt
        self.input = input
        self.prompt = prompt
        self.output_type = output_type
        self.grants = grants
        self.budget = budget
        self.deadline = deadline
        self.cancelled = cancelled
        self.env = dict(env)
        self.workdir = workdir
        self._store = store
        self._log = log

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of the same step in the same run: use it for side effects."""
        return f"{self.run_id}/{self.step_id}"

    @property
    def stream(self) -> str:
        return self._log.stream

    def time_left(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def emit(self, text: str) -> None:
        """A chunk of streamed output, appended to this agent's stream (a long one in pieces,
        so no record passes the store's 1 MiB limit however the text escapes as JSON)."""
        for start in range(0, len(text), EMIT_PIECE):
            self._log.write(ev.AGENT_CHUNK, {"text": text[start : start + EMIT_PIECE]})

    def log(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Any other record on this agent's stream (`agent.tool_call`, `agent.log`, ...)."""
        self._log.write(event_type, data)

    async def read(self, stream: str, start: int = 0) -> list[Record]:
        """Every record of a granted stream from `start` (none if nobody has written it yet).
        Raises GrantDenied for a stream not granted."""
        self.grants.check_read(stream)
        try:
            return await self._store.read_all(stream, start)
        except StreamNotFound:
            return []

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv to start for `argv`: inside the sandbox when the task asks for one."""
        return self.wrap(argv, self.env) if self.wrap is not None else list(argv)

    def input_json(self) -> str:
        return json.dumps(self.input, ensure_ascii=False, default=str)


class Agent(abc.ABC):
    """Runs one attempt. Raise AgentFailed (or a subclass) to fail it; anything else is a bug
    in the agent and fails the attempt as not retryable."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def run(self, ctx: AgentContext) -> AgentResult:
        """Do the work and return the contribution (validated by the engine afterwards)."""


AgentFactory = Callable[[AgentSpec], Agent]
