"""Confidence policies: retry below a threshold, escalate to a stronger model, refuse weak
results; and the confidence history kept per agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from parallax.cli import cli
from parallax.core import events as ev
from parallax.core.plan import AgentSpec, ConfidencePolicy, Plan, RetryPolicy, Step
from parallax.engine import api
from parallax.engine.control import control_stream, read_events
from parallax.engine.runner import RunOptions
from parallax.streams.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "conf.db") as store:
        yield store


def scripted(tmp_path: Path, name: str, *confidences: float) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([{"answer": name, "confidence": c} for c in confidences]))
    return f"scripted:{path}"


def plan(model: str, policy: ConfidencePolicy, attempts: int = 3) -> Plan:
    step = Step(
        id="ask",
        kind="agent",
        agent=AgentSpec(kind="llm", model=model),
        prompt="q",
        output="tests.engine.agents:Scored",
        retry=RetryPolicy(max_attempts=attempts, backoff_s=0.0),
        confidence=policy,
    )
    return Plan(name="conf", steps=(step,))


async def test_low_confidence_is_retried(store: SqliteStore, tmp_path: Path) -> None:
    model = scripted(tmp_path, "cheap", 0.2, 0.4, 0.9)
    state = await api.run_plan(
        store, plan(model, ConfidencePolicy(retry_below=0.5)), options=RunOptions(use_cache=False)
    )
    assert state.status == "succeeded"
    assert state.steps["ask"].attempts == 3
    assert state.steps["ask"].confidence == 0.9


async def test_still_low_after_retries_escalates_to_the_stronger_model(store: SqliteStore, tmp_path: Path) -> None:
    cheap = scripted(tmp_path, "cheap", 0.2)
    strong = scripted(tmp_path, "strong", 0.95)
    policy = ConfidencePolicy(retry_below=0.5, escalate_below=0.5, escalate_model=strong)
    state = await api.run_plan(store, plan(cheap, policy, attempts=2), options=RunOptions(use_cache=False))
    assert state.status == "succeeded"
    assert state.result == {"answer": "strong", "confidence": 0.95}
    events = await read_events(store, control_stream(state.run_id))
    [escalated] = [e for e in events if e.type == ev.STEP_ESCALATED]
    assert escalated.data == {"model": strong, "attempt": 2}
    assert state.steps["ask"].escalated_model == strong


async def test_below_accept_fails_instead_of_passing_a_weak_result(store: SqliteStore, tmp_path: Path) -> None:
    model = scripted(tmp_path, "meh", 0.6)
    state = await api.run_plan(store, plan(model, ConfidencePolicy(accept=0.8)), options=RunOptions(use_cache=False))
    step = state.steps["ask"]
    assert step.status == "failed" and step.attempts == 1
    assert "confidence 0.60 is below accept 0.8" in (step.error or "")


def test_confidence_history_per_agent(tmp_path: Path) -> None:
    async def two_runs() -> str:
        async with SqliteStore(tmp_path / "history.db") as store:
            for confidence in (0.7, 0.9):
                model = scripted(tmp_path, f"m{confidence}", confidence)
                await api.run_plan(store, plan(model, ConfidencePolicy()), options=RunOptions(use_cache=False))
            return store.url

    url = asyncio.run(two_runs())
    result = CliRunner().invoke(cli, ["--store", url, "agents", "confidence", "ask"])
    assert result.exit_code == 0, result.output
    assert "2 result(s), mean confidence 0.80" in result.output


def test_escalation_needs_a_model() -> None:
    with pytest.raises(ValueError, match="escalate_below needs escalate_model"):
        ConfidencePolicy(escalate_below=0.3)
