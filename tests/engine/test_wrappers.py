"""Each data-plane wrapper alone, around a scripted attempt (a plain coroutine standing in for
the agent: the boundary double), with the real breaker, buckets, cache and a real store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from parallax.agents.base import Agent, AgentContext, AgentResult, BudgetView
from parallax.core.agent_spec import AgentSpec
from parallax.core.errors import AgentFailed, InvalidOutput, LowConfidence, ProviderError
from parallax.core.plan import Budget, ConfidencePolicy, Limits, Step
from parallax.core.state import Usage
from parallax.engine.dataplane import CircuitBreaker, CircuitState, RateLimits, ResultCache
from parallax.engine.wrappers import (
    Attempt,
    BudgetSpent,
    Call,
    Wrapper,
    breaker_slot,
    budget_gate,
    cached,
    compose,
    confidence_checked,
    escalation,
    rate_limited,
)
from parallax.streams.sqlite import SqliteStore


class _Unused(Agent):
    async def run(self, ctx: AgentContext) -> AgentResult:
        raise AssertionError("the wrappers never run the agent themselves")


_SPEC = AgentSpec(kind="python", ref="x:y")


def _step(**fields: Any) -> Step:
    return Step(id="a", kind="agent", agent=_SPEC, **fields)


def _attempt(step: Step | None = None) -> Attempt:
    return Attempt(step or _step(), 1, _Unused(_SPEC), "prompt", {"input": {}})


def _answer(*results: AgentResult | BaseException) -> tuple[Call, list[Attempt]]:
    """A scripted attempt: returns (or raises) the given results in turn, recording what it saw."""
    seen: list[Attempt] = []
    script = list(results)

    async def call(attempt: Attempt) -> AgentResult:
        seen.append(attempt)
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return call, seen


async def test_compose_puts_the_first_wrapper_outermost() -> None:
    order: list[str] = []

    def named(name: str) -> Wrapper:
        async def wrapper(attempt: Attempt, call: Call) -> AgentResult:
            order.append(f"{name}>")
            result = await call(attempt)
            order.append(f"<{name}")
            return result

        return wrapper

    call, _ = _answer(AgentResult("ok"))
    result = await compose([named("outer"), named("inner")], call)(_attempt())
    assert result.output == "ok"
    assert order == ["outer>", "inner>", "<inner", "<outer"]


async def test_cached_serves_a_stored_result_without_running_and_stores_only_confident_ones(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "cache.db") as store:
        cache = ResultCache(store, min_confidence=0.7)
        weak, runs_weak = _answer(AgentResult({"v": 1}, 0.5, {"input_tokens": 3}), AgentResult({"v": 2}, 0.5))
        assert (await cached(cache, "weak")(_attempt(), weak)).output == {"v": 1}
        assert (await cached(cache, "weak")(_attempt(), weak)).output == {"v": 2}  # below the floor: not kept
        assert len(runs_weak) == 2

        sure, runs_sure = _answer(AgentResult({"v": 3}, 0.9, {"input_tokens": 3}))
        first = await cached(cache, "sure")(_attempt(), sure)
        again = await cached(cache, "sure")(_attempt(), sure)
        assert len(runs_sure) == 1  # the second was served from the cache
        assert not first.cached
        assert again.cached and again.output == {"v": 3} and again.confidence == 0.9 and again.usage == {}


async def test_budget_gate_tells_the_attempt_what_is_left_and_refuses_once_spent() -> None:
    usage = Usage(input_tokens=60, output_tokens=10, cost_usd=0.25)
    refused: list[tuple[str, str]] = []

    async def on_spent(step: Step, reason: str) -> None:
        refused.append((step.id, reason))

    gate = budget_gate(Budget(max_tokens=100, max_cost_usd=1.0), lambda: usage, on_spent)
    call, seen = _answer(AgentResult("ok"))
    await gate(_attempt(), call)
    assert seen[0].budget == BudgetView(tokens_left=30, cost_left_usd=0.75)

    usage.output_tokens = 40  # 100 of 100 tokens now
    call, seen = _answer(AgentResult("never"))
    with pytest.raises(BudgetSpent):
        await gate(_attempt(), call)
    assert seen == []
    assert refused == [("a", "100 tokens spent of 100")]


def _breaker(threshold: int, cooldown_s: float, changes: list[CircuitState]) -> CircuitBreaker:
    async def record(provider: str, state: CircuitState) -> None:
        changes.append(state)

    return CircuitBreaker("p", threshold, cooldown_s, record)


async def test_breaker_slot_opens_on_provider_failures_and_closes_after_a_good_trial() -> None:
    changes: list[CircuitState] = []
    breaker = _breaker(2, 0.05, changes)
    wrapper = breaker_slot(breaker, asyncio.Semaphore(4))
    call, _ = _answer(ProviderError("503", status=503), ProviderError("503", status=503), AgentResult("ok"))
    for _ in range(2):
        with pytest.raises(ProviderError):
            await wrapper(_attempt(), call)
    assert breaker.state == "open" and changes == ["open"]
    # The next call waits out the cooldown, goes through as the half-open trial, and closes it.
    assert (await wrapper(_attempt(), call)).output == "ok"
    assert changes == ["open", "half_open", "closed"]
    assert breaker.consecutive_failures == 0


async def test_breaker_slot_does_not_count_bad_output_or_cancellation_against_the_provider() -> None:
    changes: list[CircuitState] = []
    breaker = _breaker(1, 30.0, changes)
    slots = asyncio.Semaphore(1)
    wrapper = breaker_slot(breaker, slots)
    call, _ = _answer(InvalidOutput("not a View"), LowConfidence("weak", retryable=True, escalate=False))
    for _ in range(2):
        with pytest.raises(InvalidOutput):
            await wrapper(_attempt(), call)
    assert breaker.state == "closed" and breaker.consecutive_failures == 0

    started = asyncio.Event()

    async def hangs(attempt: Attempt) -> AgentResult:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(wrapper(_attempt(), hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "closed" and changes == []
    assert not slots.locked()  # the slot came back


async def test_breaker_slot_never_runs_more_attempts_than_there_are_slots() -> None:
    breaker = _breaker(5, 30.0, [])
    wrapper = breaker_slot(breaker, asyncio.Semaphore(2))
    running = 0
    most = 0
    release = asyncio.Event()

    async def call(attempt: Attempt) -> AgentResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return AgentResult("ok")

    tasks = [asyncio.create_task(wrapper(_attempt(), call)) for _ in range(5)]
    while running < 2:
        await asyncio.sleep(0)
    for _ in range(20):  # let the others try to get in
        await asyncio.sleep(0)
    assert running == 2
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2


async def test_confidence_checked_applies_the_steps_policy() -> None:
    step = _step(confidence=ConfidencePolicy(retry_below=0.5, accept=0.7))
    call, _ = _answer(AgentResult("weak", 0.3), AgentResult("meh", 0.6), AgentResult("fine", 0.8), AgentResult("?"))
    with pytest.raises(LowConfidence) as retry:
        await confidence_checked(_attempt(step), call)
    assert retry.value.retryable
    with pytest.raises(LowConfidence) as refused:
        await confidence_checked(_attempt(step), call)
    assert not refused.value.retryable
    assert (await confidence_checked(_attempt(step), call)).output == "fine"
    assert (await confidence_checked(_attempt(step), call)).output == "?"  # no confidence: taken as it is


async def test_rate_limited_takes_a_request_and_charges_the_tokens_reported() -> None:
    limits = RateLimits(Limits(requests_per_minute=600, tokens_per_minute=10_000))
    assert limits.requests is not None and limits.tokens is not None
    call, _ = _answer(AgentResult("ok", usage={"input_tokens": 1200, "output_tokens": 300}))
    await rate_limited(limits)(_attempt(), call)
    assert limits.requests.level == pytest.approx(599, abs=0.5)
    assert limits.tokens.level == pytest.approx(8500, abs=5)

    failing, _ = _answer(AgentFailed("boom"))
    with pytest.raises(AgentFailed):
        await rate_limited(limits)(_attempt(), failing)
    assert limits.requests.level == pytest.approx(598, abs=0.5)  # the request still counted


async def test_rate_limited_waits_for_the_bucket_to_refill() -> None:
    limits = RateLimits(Limits(requests_per_minute=6000))  # 100 per second
    assert limits.requests is not None
    limits.requests.level = -100.0  # overdrawn by a second's worth
    limits.requests.updated = time.monotonic()
    call, seen = _answer(AgentResult("ok"))
    task: asyncio.Task[AgentResult] = asyncio.create_task(rate_limited(limits)(_attempt(), call))
    await asyncio.sleep(0)
    assert seen == []  # still waiting for a token
    assert (await asyncio.wait_for(task, 30)).output == "ok"


def test_escalation_moves_only_a_final_low_confidence_failure_and_only_once() -> None:
    policy = ConfidencePolicy(escalate_below=0.6, escalate_model="openai:big")
    step = _step(confidence=policy)
    low = LowConfidence("weak", retryable=False, escalate=True)
    assert escalation(step, low, final=True, escalated_to=None) == "openai:big"
    assert escalation(step, low, final=False, escalated_to=None) is None  # retries left first
    assert escalation(step, low, final=True, escalated_to="openai:big") is None  # once
    assert escalation(step, AgentFailed("down"), final=True, escalated_to=None) is None
    no_escalate = LowConfidence("below accept", retryable=False, escalate=False)
    assert escalation(step, no_escalate, final=True, escalated_to=None) is None
    assert escalation(_step(), low, final=True, escalated_to=None) is None  # no policy
