"""How an `llm` agent's streamed answer reaches its stream: the model's chunks are handed to the
agent in groups (`CoalescingModel`), and what the agent's stream shows is still the whole
answer, in order, chunk by chunk as the model sends it. Content and order are asserted here,
never timing: how many records a given answer takes depends on how fast it comes."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent as PaiAgent
from pydantic_ai import AgentRunResultEvent, PartDeltaEvent, PartStartEvent, TextPartDelta, ToolCallPartDelta
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import (
    FinalResultEvent,
    ModelMessage,
    ModelResponseStreamEvent,
    PartEndEvent,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from parallax.agents.base import AgentContext, AgentLog, BudgetView
from parallax.agents.coalesce import coalesce
from parallax.agents.llm import LlmAgent
from parallax.agents.testing import ScriptedModel
from parallax.core import events as ev
from parallax.core.errors import ProviderError, StreamNotFound
from parallax.core.grants import Grants
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import agent_stream
from parallax.engine.runner import RunOptions
from parallax.streams.memory import MemoryStore
from parallax.streams.sqlite import SqliteStore
from tests.waiting import async_wait_until

TEXT = "The answer, streamed one character at a time: forty-two. " * 8
STRUCTURED = {"answer": "forty-two, after some thought about it", "confidence": 0.875}


class Verdict(BaseModel):
    answer: str
    confidence: float


def context(store: MemoryStore, step: str, output_type: type[BaseModel] | None = None) -> AgentContext:
    stream = agent_stream("r", step)
    return AgentContext(
        run_id="r", step_id=step, agent=step, attempt=1, input={}, prompt="Answer.", output_type=output_type,
        grants=Grants(agent=step, write=(stream,), read=()), store=store, log=AgentLog(store, stream, step, step),
        budget=BudgetView(), deadline=None, cancelled=asyncio.Event(), env={},
    )  # fmt: skip


def llm_on(step: str, model: FunctionModel) -> LlmAgent:
    agent = LlmAgent(AgentSpec(kind="llm", model="scripted:unused"))
    agent._models[step] = model  # the model this agent's runs use, as build_model would have made it
    return agent


async def streamed(store: MemoryStore | SqliteStore, stream: str) -> list[str]:
    """The text of every chunk record on `stream`, in order (none before it is written)."""
    try:
        records = await store.read_all(stream)
    except StreamNotFound:
        return []
    return [json.loads(r.body)["text"] for r in records if r.header(b"type") == ev.AGENT_CHUNK.encode()]


async def directly(answer: Any, output_type: type[BaseModel] | type[str]) -> tuple[str, Any, Any, list[ModelMessage]]:
    """The same answer through pydantic-ai's own event stream, one event per chunk: the text the
    chunks add up to, the output, the usage and the messages."""
    agent: PaiAgent[None, Any] = PaiAgent(ScriptedModel([answer], chunk_size=1), output_type=output_type)
    text: list[str] = []
    async with agent.run_stream_events("Answer.") as events:
        async for event in events:
            if isinstance(event, PartStartEvent):
                text.extend(x for x in (getattr(event.part, "content", None), getattr(event.part, "args", None))
                            if isinstance(x, str))  # fmt: skip
            elif isinstance(event, PartDeltaEvent):
                if isinstance(event.delta, TextPartDelta):
                    text.append(event.delta.content_delta)
                elif isinstance(event.delta, ToolCallPartDelta) and isinstance(event.delta.args_delta, str):
                    text.append(event.delta.args_delta)
            elif isinstance(event, AgentRunResultEvent):
                result = event.result
    return "".join(text), result.output, result.usage, result.all_messages()


def parts(messages: list[Any]) -> list[tuple[str, Any, Any]]:
    return [
        (type(p).__name__, getattr(p, "content", None), getattr(p, "args", None)) for m in messages for p in m.parts
    ]


@pytest.mark.parametrize(("answer", "output_type"), [(TEXT, None), (STRUCTURED, Verdict)], ids=["text", "structured"])
async def test_an_answer_streamed_in_single_characters_reaches_the_stream_whole_and_in_order(
    answer: Any, output_type: type[BaseModel] | None
) -> None:
    store = MemoryStore()
    ctx = context(store, "ask", output_type)
    result, messages = await llm_on("ask", ScriptedModel([answer], chunk_size=1)).run_turn(ctx, "Answer.", None)
    await ctx._log.flush()

    text, output, usage, expected_messages = await directly(answer, output_type or str)
    chunks = await streamed(store, ctx.stream)
    assert "".join(chunks) == text == (answer if isinstance(answer, str) else json.dumps(answer, indent=1))
    assert result.output == (output if isinstance(output, str) else output.model_dump(mode="json"))
    assert (result.usage["requests"], result.usage["input_tokens"], result.usage["output_tokens"]) == (
        usage.requests, usage.input_tokens, usage.output_tokens,
    )  # fmt: skip
    assert parts(messages) == parts(expected_messages)


async def test_each_chunk_reaches_the_stream_while_the_model_is_still_streaming() -> None:
    """Grouping never holds text back until more comes: with the model stopped after each chunk
    (until the test lets it go on), everything it sent so far is already on the stream."""
    chunks = ["The ", "answer ", "is ", "forty-two."]
    gates = [asyncio.Event() for _ in chunks[1:]]

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for i, chunk in enumerate(chunks):
            if i:
                await gates[i - 1].wait()
            yield chunk

    store = MemoryStore()
    ctx = context(store, "ask")
    run = asyncio.create_task(llm_on("ask", FunctionModel(stream_function=stream)).run(ctx))

    async def shows(sent: str) -> bool:
        return "".join(await streamed(store, ctx.stream)) == sent

    for i in range(len(chunks)):
        sent = "".join(chunks[: i + 1])
        await async_wait_until(functools.partial(shows, sent), what=f"the agent's stream to show {sent!r}")
        if i < len(gates):
            gates[i].set()
    result = await run
    assert result.output == "".join(chunks)


async def test_a_model_error_mid_stream_is_translated_after_the_text_before_it() -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "partial "
        yield "answer"
        raise ModelHTTPError(503, "scripted", "upstream broke")

    store = MemoryStore()
    ctx = context(store, "ask")
    with pytest.raises(ProviderError) as failed:
        await llm_on("ask", FunctionModel(stream_function=stream)).run(ctx)
    assert failed.value.status == 503 and failed.value.retryable
    assert failed.value.usage["requests"] == 1
    await ctx._log.flush()
    assert "".join(await streamed(store, ctx.stream)) == "partial answer"


async def test_a_cancelled_run_leaves_no_reader_behind() -> None:
    release = asyncio.Event()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "started "
        await release.wait()
        yield "never sent"

    def readers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if not t.done() and "CoalescedStream._read" in repr(t.get_coro())]

    store = MemoryStore()
    ctx = context(store, "ask")
    run = asyncio.create_task(llm_on("ask", FunctionModel(stream_function=stream)).run(ctx))

    async def started() -> bool:
        return "".join(await streamed(store, ctx.stream)) == "started "

    await async_wait_until(started, what="the first chunk on the agent's stream")
    assert readers(), "the model's stream is being read ahead"
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await async_wait_until(lambda: not readers(), what="the reader of the cancelled stream to stop")


def test_coalescing_joins_runs_of_plain_deltas_of_one_part_and_keeps_everything_else() -> None:
    def text(index: int, content: str, **kw: Any) -> PartDeltaEvent:
        return PartDeltaEvent(index=index, delta=TextPartDelta(content_delta=content, **kw))

    def args(index: int, content: str, call: str = "c1") -> PartDeltaEvent:
        return PartDeltaEvent(index=index, delta=ToolCallPartDelta(args_delta=content, tool_call_id=call))

    detailed = text(0, "d", provider_name="p", provider_details={"k": 1})
    end = PartEndEvent(index=0, part=TextPart("abcde"))
    tool_start = PartStartEvent(index=1, part=ToolCallPart("final_result", None, "c1"))
    final = FinalResultEvent(tool_name="final_result", tool_call_id="c1")
    events: list[ModelResponseStreamEvent] = [
        PartStartEvent(index=0, part=TextPart("a")), text(0, "b"), text(0, "c"), detailed, text(0, "e"), end,
        tool_start, final, args(1, '{"a"'), args(1, ": 1"), args(1, "}"), args(1, "x", call="c2"),
        text(2, "x"), text(3, "y"), text(2, "z"),
    ]  # fmt: skip
    out = coalesce(events)

    assert out[0] == events[0]
    assert out[1] == text(0, "bc")
    assert out[2] is detailed  # provider details are never merged into another delta
    assert out[3] is events[4] and out[4] is end and out[5] is tool_start and out[6] is final
    assert out[7] == args(1, '{"a": 1}')
    assert out[8] == args(1, "x", call="c2")  # another call's arguments
    assert out[9:] == events[-3:]  # deltas of different parts interleaved: nothing to join
    assert coalesce([]) == []


async def test_a_plan_of_llm_agents_streams_whole_answers_through_the_engine(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"_settings": {"chunk_size": 1}, "prose": [TEXT], "verdict": [STRUCTURED]}))
    model = f"scripted:{answers}"
    plan = Plan(
        name="streaming",
        steps=(
            Step(id="prose", kind="agent", agent=AgentSpec(kind="llm", model=model), prompt="Say it."),
            Step(id="verdict", kind="agent", agent=AgentSpec(kind="llm", model=model), prompt="Judge.",
                 output="tests.engine.agents:Scored"),
        ),
    )  # fmt: skip
    async with SqliteStore(tmp_path / "s.db") as store:
        state = await api.run_plan(store, plan, options=RunOptions(use_cache=False))
        assert state.status == "succeeded", {k: s.error for k, s in state.steps.items()}
        assert state.steps["prose"].output == TEXT and state.steps["verdict"].output == STRUCTURED
        assert "".join(await streamed(store, agent_stream(state.run_id, "prose"))) == TEXT
        assert json.loads("".join(await streamed(store, agent_stream(state.run_id, "verdict")))) == STRUCTURED
