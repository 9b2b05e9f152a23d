"""The data plane shared by every step of a run: backoff, circuit breakers, rate limits,
budget and the result cache.

None of these hold run state of their own that matters after a crash: breakers and limiters
start fresh on resume (their transitions are recorded as events for people to see), and the
budget is recomputed from the fold.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from parallax.core.errors import StreamNotFound
from parallax.core.plan import AgentSpec, Budget, Limits, RetryPolicy, canonical_json
from parallax.core.state import Usage
from parallax.streams.base import AppendInput, AppendRecord, StreamStore, TailOffset


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: backoff_s * 2**(attempt-1), capped, +/- jitter."""
    base: float = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** max(0, attempt - 1))
    spread = base * policy.jitter
    offset: float = (rng or random).uniform(-spread, spread)
    return max(0.0, base + offset)


CircuitState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """One per provider. Opens after `failures` consecutive failures; after `cooldown_s` lets
    one trial call through (half-open); a success closes it, a failure opens it again.
    `on_change(provider, state)` is awaited at every transition (the engine records it)."""

    def __init__(
        self,
        provider: str,
        failures: int,
        cooldown_s: float,
        on_change: Callable[[str, CircuitState], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.on_change = on_change
        self.clock = clock
        self.state: CircuitState = "closed"
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._trial_running = False
        self._changed = asyncio.Condition()

    async def _set(self, state: CircuitState) -> None:
        if state != self.state:
            self.state = state
            await self.on_change(self.provider, state)
        async with self._changed:
            self._changed.notify_all()

    def current(self) -> CircuitState:
        return self.state

    async def before_call(self) -> bool:
        """Wait until a call may go through; True when this call is the half-open trial."""
        while (state := self.current()) != "closed":
            if state == "open":
                remaining = self.opened_at + self.cooldown_s - self.clock()
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
                await self._set("half_open")
                continue
            if not self._trial_running:
                self._trial_running = True
                return True
            async with self._changed:
                await self._changed.wait()
        return False

    def admits(self, is_trial: bool) -> bool:
        """Still true after waiting for a concurrency slot? (Another call may have opened it.)"""
        return is_trial or self.state == "closed"

    async def record_success(self) -> None:
        if self.state == "closed" and self.consecutive_failures == 0 and not self._trial_running:
            return
        self.consecutive_failures = 0
        self._trial_running = False
        await self._set("closed")

    async def record_failure(self) -> None:
        self.consecutive_failures += 1
        was_trial = self._trial_running
        self._trial_running = False
        if was_trial or self.consecutive_failures >= self.threshold:
            self.opened_at = self.clock()
            await self._set("open")
        else:
            async with self._changed:
                self._changed.notify_all()

    async def release(self) -> None:
        """The call ended without a verdict on the provider (cancelled, invalid input)."""
        if self._trial_running:
            self._trial_running = False
            async with self._changed:
                self._changed.notify_all()


class TokenBucket:
    """`rate_per_minute` units per minute, bursts up to one minute's worth. `take` may drive the
    level below zero (a call used more tokens than expected); `wait` blocks until it is >= 1."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = rate_per_minute
        self.level = rate_per_minute
        self.clock = clock
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def wait(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                if self.level >= 1:
                    return
                await asyncio.sleep((1 - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


class RateLimits:
    """Request and token limits shared by every step of one run."""

    def __init__(self, limits: Limits) -> None:
        self.requests = TokenBucket(limits.requests_per_minute) if limits.requests_per_minute else None
        self.tokens = TokenBucket(limits.tokens_per_minute) if limits.tokens_per_minute else None

    @property
    def unlimited(self) -> bool:
        return self.requests is None and self.tokens is None

    async def acquire(self) -> None:
        if self.requests is not None:
            await self.requests.wait()
            self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.wait()

    def spent(self, usage: dict[str, Any]) -> None:
        if self.tokens is not None:
            self.tokens.take(int(usage.get("input_tokens", 0) or 0) + int(usage.get("output_tokens", 0) or 0))


@dataclass(frozen=True)
class BudgetCheck:
    exhausted: bool
    tokens_left: int | None
    cost_left_usd: float | None
    reason: str = ""


def check_budget(budget: Budget, usage: Usage) -> BudgetCheck:
    tokens_left = None if budget.max_tokens is None else budget.max_tokens - usage.total_tokens
    cost_left = None if budget.max_cost_usd is None else budget.max_cost_usd - usage.cost_usd
    if tokens_left is not None and tokens_left <= 0:
        return BudgetCheck(True, 0, cost_left, f"{usage.total_tokens} tokens spent of {budget.max_tokens}")
    if cost_left is not None and cost_left <= 0:
        return BudgetCheck(True, tokens_left, 0.0, f"${usage.cost_usd:.4f} spent of ${budget.max_cost_usd}")
    return BudgetCheck(False, tokens_left, cost_left)


def cache_key(spec: AgentSpec, output_ref: str | None, prompt: str | None, input: Any) -> str:
    material = canonical_json(
        {"agent": spec.model_dump(mode="json"), "output": output_ref, "prompt": prompt, "input": input}
    )
    return hashlib.sha256(material.encode()).hexdigest()


class ResultCache:
    """Results kept on streams named `cache/<key>`, one record per stored result (the last wins).
    Only results at or above `min_confidence` are stored or served."""

    def __init__(self, store: StreamStore, min_confidence: float) -> None:
        self.store = store
        self.min_confidence = min_confidence

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            batch = await self.store.read(f"cache/{key}", TailOffset(1))
        except StreamNotFound:
            return None
        if not batch.records:
            return None
        entry: dict[str, Any] = json.loads(batch.records[-1].body)
        confidence = entry.get("confidence")
        if confidence is None or float(confidence) < self.min_confidence:
            return None
        return entry

    async def put(self, key: str, output: Any, confidence: float | None, usage: dict[str, Any]) -> bool:
        if confidence is None or confidence < self.min_confidence:
            return False
        body = json.dumps({"output": output, "confidence": confidence, "usage": usage}, default=str).encode()
        await self.store.append(f"cache/{key}", AppendInput([AppendRecord(body=body)]))
        return True
