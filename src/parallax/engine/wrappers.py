"""The data plane as composable wrappers around one agent attempt.

An attempt is a `Call`: given an `Attempt` it runs the agent once and returns its result, or
raises the `AgentFailed` it ended with. A `Wrapper` receives the attempt and the next call and
decides what happens around it (wait, refuse, check the result, serve it from elsewhere), in
the spirit of Temporal's interceptors and pydantic-ai's wrapper models. `compose` stacks them,
the first outermost. The agent step kind (`engine.steps.agent`) composes, per step:

    cached -> budget_gate -> breaker_slot -> confidence_checked -> rate_limited -> the attempt

Each wrapper holds no run state that matters after a crash (breakers and buckets start fresh on
resume; the budget is read from the fold), and each is tested alone (tests/engine/test_wrappers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from parallax.agents.base import Agent, AgentResult, BudgetView
from parallax.core.confidence import check_confidence
from parallax.core.errors import AgentFailed, InvalidOutput, LowConfidence
from parallax.core.plan import Budget, Step
from parallax.core.state import Usage
from parallax.engine.dataplane import CircuitBreaker, RateLimits, ResultCache, check_budget


@dataclass(frozen=True)
class Attempt:
    """One try at a step: its number (1-based, across resumes), the agent that runs it (None
    when a worker process runs it: see `engine.work`), what it is given, and what is left of
    the run's budget when it starts."""

    step: Step
    number: int
    agent: Agent | None
    prompt: str | None
    agent_input: dict[str, Any] = field(default_factory=dict[str, Any])
    budget: BudgetView = field(default_factory=BudgetView)


Call = Callable[[Attempt], Awaitable[AgentResult]]
Wrapper = Callable[[Attempt, Call], Awaitable[AgentResult]]


class BudgetSpent(Exception):
    """The run's budget is spent: the attempt did not run (the gate recorded why)."""


def compose(wrappers: Sequence[Wrapper], call: Call) -> Call:
    """`call` with `wrappers` around it, the first outermost."""
    for wrapper in reversed(wrappers):
        call = _bind(wrapper, call)
    return call


def _bind(wrapper: Wrapper, inner: Call) -> Call:
    async def bound(attempt: Attempt) -> AgentResult:
        return await wrapper(attempt, inner)

    return bound


def cached(cache: ResultCache, key: str) -> Wrapper:
    """Serve the result stored under `key` (at or above the cache's confidence floor) without
    running anything; otherwise run, and store a result that clears the floor. A served result
    has `cached=True` and no usage."""

    async def wrapper(attempt: Attempt, call: Call) -> AgentResult:
        hit = await cache.get(key)
        if hit is not None:
            return AgentResult(hit["output"], hit["confidence"], {}, cached=True)
        result = await call(attempt)
        await cache.put(key, result.output, result.confidence, result.usage)
        return result

    return wrapper


def budget_gate(
    budget: Budget, usage: Callable[[], Usage], on_spent: Callable[[Step, str], Awaitable[None]]
) -> Wrapper:
    """Refuse the attempt (`on_spent(step, reason)`, then `BudgetSpent`) once the run's usage has
    reached its budget; otherwise tell the attempt what is left."""

    async def wrapper(attempt: Attempt, call: Call) -> AgentResult:
        check = check_budget(budget, usage())
        if check.exhausted:
            await on_spent(attempt.step, check.reason)
            raise BudgetSpent(check.reason)
        return await call(replace(attempt, budget=BudgetView(check.tokens_left, check.cost_left_usd)))

    return wrapper


def breaker_slot(breaker: CircuitBreaker, slots: asyncio.Semaphore) -> Wrapper:
    """Hold one of the run's concurrency slots for the attempt, and let it through only while
    the provider's circuit allows (one trial call when half-open). A provider failure counts
    against the circuit; an output that does not fit (or is not confident enough), a
    cancellation or an internal error says nothing about the provider and counts for nothing."""

    async def wrapper(attempt: Attempt, call: Call) -> AgentResult:
        while True:  # a slot, with the breaker still letting this call through once we hold it
            is_trial = False if breaker.state == "closed" else await breaker.before_call()
            await slots.acquire()
            if breaker.admits(is_trial):
                break
            slots.release()
        try:
            result = await call(attempt)
        except InvalidOutput:
            await breaker.release()
            raise
        except AgentFailed:
            await breaker.record_failure()
            raise
        except BaseException:
            await breaker.release()
            raise
        finally:
            slots.release()
        if breaker.state != "closed" or breaker.consecutive_failures:
            await breaker.record_success()
        return result

    return wrapper


async def confidence_checked(attempt: Attempt, call: Call) -> AgentResult:
    """Raise `LowConfidence` when the step's confidence policy does not take the result."""
    result = await call(attempt)
    check_confidence(attempt.step.confidence, result.confidence, result.usage)
    return result


def rate_limited(limits: RateLimits) -> Wrapper:
    """Wait for the run's request and token buckets before the call; charge the tokens the
    call reports after it."""

    async def wrapper(attempt: Attempt, call: Call) -> AgentResult:
        await limits.acquire()
        result = await call(attempt)
        limits.spent(result.usage)
        return result

    return wrapper


def escalation(step: Step, error: AgentFailed, final: bool, escalated_to: str | None) -> str | None:
    """The stronger model a step moves to after this failure, or None. Only a final
    low-confidence failure whose policy asks for it escalates, and a step escalates once."""
    policy = step.confidence
    target = policy.escalate_model if policy is not None else None
    if isinstance(error, LowConfidence) and final and error.escalate and target and escalated_to is None:
        return target
    return None
