"""The real `llm` path (pydantic-ai, OpenAI SDK, HTTP) against a fake OpenAI-compatible server
on loopback: streaming, typed output and its validation retries, 429 with Retry-After, 500,
malformed JSON. Model requests are re-allowed only inside these tests, only for that server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pydantic_ai.models
import pytest

from parallax.core import events as ev
from parallax.core.plan import AgentSpec, Plan, RetryPolicy, Step
from parallax.engine import api
from parallax.engine.control import agent_stream, control_stream, read_events
from parallax.engine.runner import RunOptions
from parallax.streams.sqlite import SqliteStore
from tests.agents.fake_openai import FakeOpenAI

SCORED = "tests.engine.agents:Scored"


@pytest.fixture(autouse=True)
def allow_loopback_model_requests() -> Iterator[None]:
    with pydantic_ai.models.override_allow_model_requests(True):
        yield


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "llm.db") as store:
        yield store


def plan_for(server: FakeOpenAI, *, output: str | None = SCORED, attempts: int = 3) -> Plan:
    agent = AgentSpec(kind="llm", model="openai-compatible:fake-model", base_url=server.base_url)
    step = Step(
        id="ask",
        kind="agent",
        agent=agent,
        prompt="What is 6 x 7? {{input.hint}}",
        output=output,
        retry=RetryPolicy(max_attempts=attempts, backoff_s=0.01, max_backoff_s=0.02),
    )
    return Plan(name="llm", steps=(step,), inputs={"hint": "Answer with confidence."})


async def test_streamed_typed_output_with_usage(store: SqliteStore) -> None:
    script = [{"tool": {"name": "final_result", "arguments": {"answer": "42", "confidence": 0.9}}}]
    with FakeOpenAI(script) as server:
        state = await api.run_plan(store, plan_for(server), options=RunOptions(use_cache=False))
    assert state.status == "succeeded", state.steps["ask"].error
    assert state.result == {"answer": "42", "confidence": 0.9}
    assert state.steps["ask"].confidence == 0.9
    usage = state.steps["ask"].usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 120, 30)
    request = server.requests[0]
    assert request["stream"] is True
    assert request["messages"][-1]["content"] == "What is 6 x 7? Answer with confidence."
    assert request["tools"][0]["function"]["name"] == "final_result"
    records = await store.read_all(agent_stream(state.run_id, "ask"))
    chunks = [json.loads(r.body)["text"] for r in records if r.header(b"type") == ev.AGENT_CHUNK.encode()]
    # The server streamed the arguments in 16-character chunks; the agent's stream holds them all,
    # in order, in as many records as they were grouped into on arrival (see CoalescingModel).
    assert chunks
    assert json.loads("".join(chunks)) == {"answer": "42", "confidence": 0.9}


async def test_invalid_output_goes_back_with_the_validation_error(store: SqliteStore) -> None:
    script = [
        {"tool": {"name": "final_result", "arguments": {"answer": "42", "confidence": "very"}}},
        {"tool": {"name": "final_result", "arguments": {"answer": "42", "confidence": 0.8}}},
    ]
    with FakeOpenAI(script) as server:
        state = await api.run_plan(store, plan_for(server), options=RunOptions(use_cache=False))
    assert state.status == "succeeded"
    assert state.steps["ask"].attempts == 1, "validation retries happen inside one attempt"
    retry_messages = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert "confidence" in retry_messages[0]["content"] and "float" in retry_messages[0]["content"]


async def test_output_that_never_validates_fails_clearly(store: SqliteStore) -> None:
    bad = {"tool": {"name": "final_result", "arguments": {"answer": 42}}}
    with FakeOpenAI([bad, bad, bad, bad]) as server:
        state = await api.run_plan(store, plan_for(server), options=RunOptions(use_cache=False))
    step = state.steps["ask"]
    assert step.status == "failed"
    assert step.attempts == 1, "invalid output is not an engine retry"
    assert "Exceeded maximum output retries" in (step.error or "")
    assert len(server.requests) == 3  # the first answer and two retries with the error


async def test_429_honours_retry_after(store: SqliteStore) -> None:
    script = [
        {
            "status": 429,
            "headers": {"Retry-After": "1"},
            "body": {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
        },
        {"tool": {"name": "final_result", "arguments": {"answer": "42", "confidence": 0.7}}},
    ]
    with FakeOpenAI(script) as server:
        state = await api.run_plan(store, plan_for(server), options=RunOptions(use_cache=False))
    assert state.status == "succeeded"
    assert len(server.requests) == 2, "the SDK's own retries are off: every retry is the engine's"
    events = await read_events(store, control_stream(state.run_id))
    failed = next(e for e in events if e.type == ev.STEP_FAILED)
    retry = next(e for e in events if e.type == ev.STEP_RETRY)
    assert "429" in failed.data["error"] and failed.data["final"] is False
    assert retry.data["delay_s"] >= 1.0


async def test_500_is_retried_then_succeeds(store: SqliteStore) -> None:
    script = [{"status": 500, "body": {"error": {"message": "upstream broke"}}}, {"text": "forty-two"}]
    with FakeOpenAI(script) as server:
        state = await api.run_plan(store, plan_for(server, output=None), options=RunOptions(use_cache=False))
    assert state.status == "succeeded"
    assert state.result == "forty-two"
    assert state.steps["ask"].attempts == 2


async def test_malformed_json_is_a_provider_error(store: SqliteStore) -> None:
    script = [{"raw": "data: {this is not json\n\n"}] * 2
    with FakeOpenAI(script) as server:
        state = await api.run_plan(store, plan_for(server, attempts=2), options=RunOptions(use_cache=False))
    step = state.steps["ask"]
    assert step.status == "failed"
    assert step.attempts == 2, "a malformed response is worth another attempt"
    assert "fake-model" in (step.error or "")


async def test_missing_key_is_a_clear_non_retryable_error(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    agent = AgentSpec(kind="llm", model="anthropic:claude-sonnet-4-5")
    plan = Plan(name="nokey", steps=(Step(id="ask", kind="agent", agent=agent, prompt="hi"),))
    state = await api.run_plan(store, plan, options=RunOptions(use_cache=False))
    step = state.steps["ask"]
    assert step.status == "failed" and step.attempts == 1
    assert "ANTHROPIC_API_KEY" in (step.error or "")
