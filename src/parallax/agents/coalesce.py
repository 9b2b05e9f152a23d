"""Reading a model's stream at coarser grain: what the provider sent since the run last asked.

pydantic-ai walks every event of a model's stream through the agent run's machinery (usage
checks, capability hooks, anyio locks and cancel scopes that each yield to the event loop, the
event handler): some 800 Python calls per chunk, against about a hundred to read the chunk off
the provider's stream and apply it to the response. `CoalescingModel` wraps the model so that a
reader task takes the provider's stream as it comes, each chunk applied in order by the
provider's own parts manager (so the response, its usage and the run's messages are exactly what
they were), while the run is handed what arrived since it last took some: consecutive plain
deltas of one part joined into one delta, everything else as it came.

When the run asks after a quiet spell, what arrived is handed over at once; while the provider
keeps sending, at most one group every `interval_s`, and the stream's end (or its error) is
handed over at once. So a chunk waits at most `interval_s`, and the cost per chunk falls as the
load rises (a run that falls behind, one of many on a loop, gets larger groups). The text, its
order and its parts are unchanged; only the number of events the run handles is. The response
the run reads (`get()`, `usage`) is the provider's as read so far, which may be ahead of the
events handed over by up to one group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pydantic_ai.messages import (
    FinalResultEvent,
    ModelMessage,
    ModelResponse,
    ModelResponsePartDelta,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    TextPartDelta,
    ThinkingPartDelta,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage

__all__ = ["CoalescedStream", "CoalescingModel", "coalesce"]


class CoalescingModel(WrapperModel):
    """A model whose streamed responses are handed over coalesced, at most one group every
    `interval_s` while the provider keeps sending (see the module docstring); requests that are
    not streamed are the wrapped model's, unchanged."""

    def __init__(self, wrapped: Model, *, interval_s: float = 0.1) -> None:
        super().__init__(wrapped)
        self.interval_s = interval_s

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as inner:
            stream = CoalescedStream(inner, self.interval_s)
            try:
                yield stream
            finally:
                await stream.stop_reading()  # before the provider's stream is closed


class CoalescedStream(StreamedResponse):
    """A provider's streamed response, read ahead by one task and handed over in groups.

    The provider's response (`inner`) stays the source of truth: `get()`, `usage`, its parts and
    its final-result and part-end events are its own. Only runs of plain text, thinking and
    tool-argument deltas of one part are joined.
    """

    def __init__(self, inner: StreamedResponse, interval_s: float = 0.0) -> None:
        super().__init__(model_request_parameters=inner.model_request_parameters)
        self._inner = inner
        self._interval_s = interval_s
        self._arrived: list[ModelResponseStreamEvent] = []
        self._ended = False
        self._stopping = False
        self._failure: BaseException | None = None
        self._idle = False  # the consumer waits for the next event: wake it when one arrives
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
        # The inner response's own iterator already adds final-result and part-end events and
        # guards against cancel-teardown errors; they pass through here as they come.
        if self._event_iterator is None:
            self._event_iterator = self._get_event_iterator()
        return self._event_iterator

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._reader = loop.create_task(self._read())
        handed = -float("inf")  # when the last group was handed over
        while True:
            if not self._arrived:
                if self._ended:
                    break
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
                self._idle = False
                continue
            wait = handed + self._interval_s - loop.time()
            if wait > 0 and not self._ended:
                # More is coming while the window is open: let it gather (the stream's end
                # hands the group over at once).
                self._wake.clear()
                timer = loop.call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
            group, self._arrived = self._arrived, []
            handed = loop.time()
            for event in coalesce(group):
                if self._first_chunk_monotonic is None:
                    self._first_chunk_monotonic = time.perf_counter()
                if isinstance(event, FinalResultEvent):
                    self.final_result_event = event
                yield event
        if self._failure is not None:
            raise self._failure
        if not self._cancelled:
            self._finished = True

    async def _read(self) -> None:
        try:
            async for event in self._inner:
                self._arrived.append(event)
                if self._idle:
                    self._wake.set()
        except asyncio.CancelledError as e:
            if not self._stopping:  # cancelled by someone else: the consumer learns it too
                self._failure = e
            raise
        except BaseException as e:  # raised to the consumer after the events that came before it
            self._failure = e
        finally:
            self._ended = True
            self._wake.set()

    async def stop_reading(self) -> None:
        """Stop the reader (a consumer that walked away early leaves it running)."""
        reader = self._reader
        if reader is not None and not reader.done():
            self._stopping = True
            reader.cancel()
            await asyncio.wait((reader,))

    def _enforce_request_deadline(self, deadline: Any) -> None:
        # The deadlines bound waiting for the provider's events: the reader's pulls.
        self._inner._enforce_request_deadline(deadline)

    def get(self) -> ModelResponse:
        response = self._inner.get()
        if self.failed_attempts:  # attempts a fallback moved on from before this stream was opened
            response.failed_attempts = [*self.failed_attempts, *(response.failed_attempts or [])]
        return response

    @property
    def usage(self) -> RequestUsage:
        return self._inner.usage

    async def close_stream(self) -> None:
        await self._inner.cancel()

    def get_stream_cancel_errors(self) -> tuple[type[BaseException], ...]:
        return self._inner.get_stream_cancel_errors()

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    @property
    def provider_name(self) -> str | None:
        return self._inner.provider_name

    @property
    def provider_url(self) -> str | None:
        return self._inner.provider_url

    @property
    def timestamp(self) -> datetime:
        return self._inner.timestamp


def coalesce(events: list[ModelResponseStreamEvent]) -> list[ModelResponseStreamEvent]:
    """`events` with each run of consecutive, joinable deltas of one part as one delta."""
    out: list[ModelResponseStreamEvent] = []
    run: list[PartDeltaEvent] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(PartDeltaEvent(index=run[0].index, delta=_joined([e.delta for e in run])))
        run.clear()

    for event in events:
        if isinstance(event, PartDeltaEvent) and _joinable(event.delta):
            if run and not (run[0].index == event.index and _same_kind(run[0].delta, event.delta)):
                flush()
            run.append(event)
        else:
            flush()
            out.append(event)
    flush()
    return out


def _joinable(delta: ModelResponsePartDelta) -> bool:
    """A delta that only appends text: no provider details, names, signatures or citations."""
    if isinstance(delta, TextPartDelta):
        return delta.provider_name is None and delta.provider_details is None and delta.citations_delta is None
    if isinstance(delta, ToolCallPartDelta):
        return (
            isinstance(delta.args_delta, str)
            and delta.tool_name_delta is None
            and delta.provider_name is None
            and delta.provider_details is None
        )
    if isinstance(delta, ThinkingPartDelta):
        return (
            isinstance(delta.content_delta, str)
            and delta.signature_delta is None
            and delta.provider_name is None
            and delta.provider_details is None
        )
    return False


def _same_kind(a: ModelResponsePartDelta, b: ModelResponsePartDelta) -> bool:
    if isinstance(a, ToolCallPartDelta) and isinstance(b, ToolCallPartDelta):
        return a.tool_call_id == b.tool_call_id
    return type(a) is type(b)


def _joined(deltas: list[ModelResponsePartDelta]) -> ModelResponsePartDelta:
    first = deltas[0]
    if isinstance(first, TextPartDelta):
        return TextPartDelta(content_delta="".join(d.content_delta for d in deltas if isinstance(d, TextPartDelta)))
    if isinstance(first, ToolCallPartDelta):
        args = "".join(
            d.args_delta for d in deltas if isinstance(d, ToolCallPartDelta) and isinstance(d.args_delta, str)
        )
        return ToolCallPartDelta(args_delta=args, tool_call_id=first.tool_call_id)
    assert isinstance(first, ThinkingPartDelta)
    return ThinkingPartDelta(
        content_delta="".join(d.content_delta or "" for d in deltas if isinstance(d, ThinkingPartDelta))
    )
