"""Offline test doubles at the model boundary. They never reach a network.

- `ScriptedModel`: a pydantic-ai model that answers from a list (or a JSON file keyed by agent
  name), one answer per request, streamed in chunks. A dict answer becomes the structured
  output (a call of the output tool); a string answer is text. An answer
  `{"__error__": {"status": 429, "retry_after": 1}}` raises the provider error a real HTTP
  model would, so retry paths can be exercised without HTTP. An answer
  `{"__tool__": "write_file", "args": {...}}` calls one of the agent's tools (a coder's).
- `FunctionModel` is pydantic-ai's own, re-exported for writing answers as code.

`make demo` runs the feature-spec example on `ScriptedModel` when no model is configured, and
says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.usage import RequestUsage

from parallax.core.errors import PlanError

__all__ = ["FunctionModel", "ScriptedModel"]


class ScriptedModel(FunctionModel):
    """Answers in order; the last answer repeats once the script runs out."""

    def __init__(
        self,
        answers: Sequence[Any],
        *,
        chunk_size: int = 24,
        chunk_delay_s: float = 0.0,
        hold_until: str | None = None,
    ) -> None:
        if not answers:
            raise PlanError("a scripted model needs at least one answer")
        self.answers = list(answers)
        self.calls = 0
        self.chunk_size = chunk_size
        self.chunk_delay_s = chunk_delay_s
        # A file whose existence releases the rest of each streamed answer: a test can watch a
        # run mid-stream for as long as it needs, then let it finish (no timing involved).
        self.hold_until = Path(hold_until) if hold_until else None
        super().__init__(self._answer, stream_function=self._stream, model_name="scripted")

    @staticmethod
    def keys_in(path: str) -> set[str]:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return set()
        return set(data) if isinstance(data, dict) else set()

    @classmethod
    def from_file(cls, path: str, agent: str) -> ScriptedModel:
        """`path` holds a JSON list of answers, or an object mapping agent names (or step ids,
        such as `critic.r2` for a later round) to lists, with an optional
        `"_settings": {"chunk_delay_s": ..., "chunk_size": ..., "hold_until": FILE}`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise PlanError(f"scripted answers {path!r} cannot be read: {e}") from e
        settings: dict[str, Any] = {}
        if isinstance(data, dict):
            settings = data.get("_settings", {})
            if agent not in data:
                raise PlanError(f"scripted answers {path!r} have none for agent {agent!r}")
            data = data[agent]
        if not isinstance(data, list):
            data = [data]
        return cls(
            data,
            chunk_size=int(settings.get("chunk_size", 24)),
            chunk_delay_s=float(settings.get("chunk_delay_s", 0.0)),
            hold_until=settings.get("hold_until"),
        )

    def _next(self) -> Any:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, dict) and "__error__" in answer:
            error = answer["__error__"]
            raise ModelHTTPError(
                int(error.get("status", 500)),
                "scripted",
                error.get("body", "scripted failure"),
                retry_after=error.get("retry_after"),
            )
        return answer

    @staticmethod
    def _usage(answer: Any) -> RequestUsage:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return RequestUsage(input_tokens=50, output_tokens=max(1, len(text) // 4))

    def _answer(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answer = self._next()
        if _is_tool_call(answer):
            call = ToolCallPart(answer["__tool__"], answer.get("args", {}), tool_call_id=f"scripted-{self.calls}")
            return ModelResponse(parts=[call], usage=self._usage(answer), model_name="scripted")
        if info.output_tools and not isinstance(answer, str):
            part: TextPart | ToolCallPart = ToolCallPart(info.output_tools[0].name, answer)
        elif info.output_tools and isinstance(answer, str) and not info.allow_text_output:
            part = ToolCallPart(info.output_tools[0].name, answer)
        else:
            part = TextPart(answer if isinstance(answer, str) else json.dumps(answer))
        return ModelResponse(parts=[part], usage=self._usage(answer), model_name="scripted")

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        answer = self._next()
        if _is_tool_call(answer):  # a call of one of the agent's own tools (a coder's write_file, ...)
            args = json.dumps(answer.get("args", {}))
            yield {0: DeltaToolCall(name=answer["__tool__"], json_args=args, tool_call_id=f"scripted-{self.calls}")}
            return
        structured = bool(info.output_tools) and (not isinstance(answer, str) or not info.allow_text_output)
        text = answer if isinstance(answer, str) else json.dumps(answer, indent=1)
        pieces = [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)] or [""]
        if structured:
            yield {0: DeltaToolCall(name=info.output_tools[0].name, tool_call_id="scripted-1")}
        for index, piece in enumerate(pieces):
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            if index == 1 and self.hold_until is not None:
                await _released(self.hold_until)
            yield {0: DeltaToolCall(json_args=piece)} if structured else piece


HOLD_LIMIT_S = 600.0


async def _released(path: Path) -> None:
    """Wait until `path` exists (a test releases a held answer); fail after HOLD_LIMIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HOLD_LIMIT_S
    while not await asyncio.to_thread(path.exists):
        if loop.time() > deadline:
            raise TimeoutError(f"scripted answer held: {path} never appeared")
        await asyncio.sleep(0.02)  # polling a file the test writes; the deadline bounds it


def _is_tool_call(answer: Any) -> bool:
    """`{"__tool__": "write_file", "args": {...}}` scripts a call of the agent's tool."""
    return isinstance(answer, dict) and isinstance(answer.get("__tool__"), str)
