"""How tests synchronise: by waiting for a condition, with a deadline. Never by sleeping and
hoping that something happened meanwhile.

The deadline only matters when something is wrong (a passing test returns as soon as the
condition holds), so it is generous: the suite runs on loaded 2-core machines, where starting a
Python process alone can take seconds."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0

# What is waited for, for the failure message: a string, or a function that says what was seen
# last (called only on a timeout).
What = str | Callable[[], str]


def _timed_out(what: What, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g}s waiting for {what if isinstance(what, str) else what()}")


def wait_until(
    predicate: Callable[[], T], *, what: What, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.05
) -> T:
    """The first truthy value of `predicate()`, polled every `interval` seconds; AssertionError
    naming `what` once `timeout` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    what: What,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - wait_until's deadline, checked between polls
    interval: float = 0.05,
) -> T:
    """`wait_until` for event-loop code: `predicate` may be a coroutine function, and the loop
    keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(interval)
