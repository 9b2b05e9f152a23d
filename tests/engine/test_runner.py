"""The engine on a real SQLite store: DAG execution, data plane, merge, gates, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parallax.core import events as ev
from parallax.core.plan import AgentSpec, Budget, GateSpec, Limits, MergeSpec, Plan, RetryPolicy, RuleSpec, Step
from parallax.core.state import fold
from parallax.engine import api
from parallax.engine.control import agent_stream, control_stream, read_events
from parallax.engine.runner import Runner, RunOptions
from parallax.streams.sqlite import SqliteStore
from tests.waiting import async_wait_until

AGENTS = "tests.engine.agents"
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.05, jitter=0.1)


def py(step_id: str, fn: str, *after: str, output: str | None = None, **kw: Any) -> Step:
    return Step(
        id=step_id,
        kind="agent",
        after=after,
        agent=AgentSpec(kind="python", ref=f"{AGENTS}:{fn}"),
        output=output,
        retry=kw.pop("retry", FAST_RETRY),
        **kw,
    )


def merge(step_id: str, *after: str, **kw: Any) -> Step:
    return Step(id=step_id, kind="merge", after=after, merge=MergeSpec(**kw))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "engine.db") as store:
        yield store


def plan_of(tmp_path: Path, *steps: Step, **kw: Any) -> Plan:
    inputs = {"dir": str(tmp_path), **kw.pop("inputs", {})}
    return Plan(name="test", steps=steps, inputs=inputs, **kw)


def counts(tmp_path: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in tmp_path.glob("*.count")}


async def test_fan_out_and_merge_surfaces_conflicts(store: SqliteStore, tmp_path: Path) -> None:
    views = {"a": {"rate_limit": 10}, "b": {"rate_limit": 60}, "c": {"rate_limit": 10, "database": "mysql"}}
    plan = plan_of(
        tmp_path,
        *(py(name, "view", output=f"{AGENTS}:View") for name in views),
        merge("merge", "a", "b", "c", ignore=("agent",)),
        inputs={"views": views},
    )
    state = await api.run_plan(store, plan)
    assert state.status == "succeeded"
    paths = sorted(c.path for c in state.conflicts)
    assert paths == ["database", "rate_limit"]
    rate = next(c for c in state.conflicts if c.path == "rate_limit")
    assert rate.values == {"a": 10, "b": 60, "c": 10}
    assert state.result["document"]["a"]["rate_limit"] == 10
    events = await read_events(store, control_stream(state.run_id))
    assert [e.type for e in events].count(ev.CONFLICT_FOUND) == 2
    assert fold(events).steps == state.steps, "the live state is exactly the fold of the log"


async def test_a_step_starts_when_its_own_inputs_are_ready(store: SqliteStore, tmp_path: Path) -> None:
    # slow -> after_slow ; fast -> after_fast: after_fast must not wait for slow (no superstep barrier)
    plan = plan_of(
        tmp_path,
        py("slow", "timed"),
        py("fast", "timed"),
        py("after_slow", "timed", "slow"),
        py("after_fast", "timed", "fast"),
        inputs={"sleeps": {"slow": 0.5}},
    )
    state = await api.run_plan(store, plan)
    assert state.status == "succeeded"
    timeline = [json.loads(line) for line in (tmp_path / "timeline").read_text().splitlines()]
    at = {(e["step"], e["event"]): e["t"] for e in timeline}
    assert at[("after_fast", "end")] < at[("slow", "end")]
    assert at[("after_slow", "start")] >= at[("slow", "end")]


async def test_concurrency_cap(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(tmp_path, *(py(f"s{i}", "concurrent") for i in range(12)), concurrency=3)
    state = await api.run_plan(store, plan)
    assert state.status == "succeeded"
    assert int((tmp_path / "peak").read_text()) == 3


async def test_retries_with_backoff_are_recorded(store: SqliteStore, tmp_path: Path) -> None:
    state = await api.run_plan(store, plan_of(tmp_path, py("f", "flaky"), inputs={"fail_times": 2}))
    assert state.status == "succeeded"
    assert state.steps["f"].attempts == 3
    assert state.result == {"attempts": 3}
    types = [e.type for e in await read_events(store, control_stream(state.run_id)) if e.step == "f"]
    assert types == [
        ev.STEP_STARTED, ev.STEP_FAILED, ev.STEP_RETRY,
        ev.STEP_STARTED, ev.STEP_FAILED, ev.STEP_RETRY,
        ev.STEP_STARTED, ev.STEP_OUTPUT,
    ]  # fmt: skip


async def test_exhausted_retries_fail_the_step_and_skip_dependents(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        py("f", "flaky"),
        py("g", "view", "f"),
        py("ok", "view", output=f"{AGENTS}:View"),
        merge("m", "f", "ok"),
        inputs={"fail_times": 10},
    )
    state = await api.run_plan(store, plan)
    assert state.steps["f"].status == "failed" and state.steps["f"].attempts == 3
    assert state.steps["g"].status == "skipped"
    assert state.status == "failed"  # g is a sink and did not succeed
    gap = next(c for c in state.conflicts if c.kind == "gap")
    assert gap.path == "f" and "transient failure 3" in gap.message


async def test_non_retryable_failures_and_agent_bugs_fail_at_once(store: SqliteStore, tmp_path: Path) -> None:
    state = await api.run_plan(store, plan_of(tmp_path, py("b", "broken"), py("z", "buggy")))
    assert state.steps["b"].attempts == 1 and state.steps["b"].status == "failed"
    assert state.steps["z"].status == "failed"
    assert "ZeroDivisionError" in (state.steps["z"].error or "")
    assert counts(tmp_path)["b"] == 1


async def test_timeout_becomes_a_gap_in_the_merge(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        py("slow", "slow", timeout_s=0.2, retry=RetryPolicy(max_attempts=1)),
        py("fast", "view", output=f"{AGENTS}:View"),
        merge("m", "slow", "fast", min_contributions=1),  # this pattern allows gaps
    )
    state = await api.run_plan(store, plan)
    assert state.status == "succeeded"
    assert state.steps["slow"].status == "failed"
    [gap] = [c for c in state.conflicts if c.kind == "gap"]
    assert gap.path == "slow" and "timed out" in gap.message


async def test_invalid_typed_output_fails_without_retry(store: SqliteStore, tmp_path: Path) -> None:
    state = await api.run_plan(store, plan_of(tmp_path, py("w", "wrong_shape", output=f"{AGENTS}:View")))
    step = state.steps["w"]
    assert step.status == "failed" and step.attempts == 1
    assert "does not fit tests.engine.agents:View" in (step.error or "")


async def test_grants_limit_what_an_agent_reads(store: SqliteStore, tmp_path: Path) -> None:
    run_id = "grants"
    plan = plan_of(
        tmp_path,
        py("up", "chatty"),
        py("down", "reader", "up", retry=RetryPolicy(max_attempts=1)),
        inputs={"read_ok": agent_stream(run_id, "up"), "read_denied": agent_stream(run_id, "other")},
    )
    state = await api.run_plan(store, plan, run_id=run_id)
    assert state.steps["down"].status == "failed"
    assert "has no grant to read 'runs/grants/agents/other'" in (state.steps["down"].error or "")
    chunks = list(await store.read_all(agent_stream(run_id, "up")))
    assert b"".join(json.loads(r.body)["text"].encode() for r in chunks) == b"chunk 0 chunk 1 chunk 2 chunk 3 chunk 4 "


async def test_circuit_breaker_opens_and_is_recorded(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        *(py(f"f{i}", "flaky", retry=RetryPolicy(max_attempts=1)) for i in range(3)),
        py("late", "view", "f0", "f1", "f2"),
        inputs={"fail_times": 10},
        limits=Limits(breaker_failures=2, breaker_cooldown_s=0.1),
        concurrency=1,
    )
    state = await api.run_plan(store, plan)
    changes = [
        (e.data["provider"], e.data["state"])
        for e in await read_events(store, control_stream(state.run_id))
        if e.type == ev.CIRCUIT_CHANGED
    ]
    assert changes[:3] == [("python", "open"), ("python", "half_open"), ("python", "open")]
    assert state.circuits["python"] == "open"


async def test_cancel_from_another_handle(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(tmp_path, py("slow", "slow"), py("after", "view", "slow"), inputs={"sleep": 30})
    run_id = await api.create_run(store, plan)
    runner = asyncio.create_task(Runner(store, run_id).run())
    await async_wait_until(lambda: step_status(store, run_id, "slow", "running"), what="the slow step to start")
    async with SqliteStore(store.path) as other:
        await api.request_cancel(other, run_id, "changed my mind")
    state = await asyncio.wait_for(runner, 60)
    assert state.status == "cancelled"
    assert (await api.load_run(store, run_id)).status == "cancelled"


async def test_approval_gate_waits_for_a_person(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        py("draft", "view", output=f"{AGENTS}:View"),
        Step(id="review", kind="gate", after=("draft",), gate=GateSpec(kind="approval")),
        py("publish", "view", "review"),
    )
    run_id = await api.create_run(store, plan)
    runner = asyncio.create_task(Runner(store, run_id).run())
    await async_wait_until(lambda: step_status(store, run_id, "review", "waiting"), what="the gate to wait")
    assert "publish" not in counts(tmp_path)
    await api.decide_gate(store, run_id, "review", approved=True, by="ana", note="ship it")
    state = await asyncio.wait_for(runner, 60)
    assert state.status == "succeeded"
    assert state.steps["review"].output == {"approved": True, "by": "ana", "note": "ship it"}
    with pytest.raises(Exception, match="already approved by ana"):
        await api.decide_gate(store, run_id, "review", approved=False, by="bo")


async def test_rejected_gate_and_gate_timeout(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        Step(id="g", kind="gate", gate=GateSpec(kind="approval", timeout_s=0.2, on_timeout="reject")),
        py("after", "view", "g"),
    )
    state = await api.run_plan(store, plan)
    assert state.steps["g"].status == "failed"
    assert state.steps["g"].error == "rejected by timeout: no decision in 0.2s"
    assert state.steps["after"].status == "skipped"


async def test_check_gate(store: SqliteStore, tmp_path: Path) -> None:
    views = {"a": {"rate_limit": 1}, "b": {"rate_limit": 2}}
    plan = plan_of(
        tmp_path,
        *(py(n, "view", output=f"{AGENTS}:View") for n in views),
        merge("m", "a", "b", ignore=("agent",)),
        Step(id="no_conflicts", kind="gate", after=("m",), gate=GateSpec(kind="check")),
        inputs={"views": views},
    )
    state = await api.run_plan(store, plan)
    assert state.steps["no_conflicts"].status == "failed"
    assert "1 unresolved conflict(s)" in (state.steps["no_conflicts"].error or "")


async def test_command_agent_round_trip(store: SqliteStore, tmp_path: Path) -> None:
    script = 'python3 -c \'import json,sys; d=json.load(sys.stdin); print("working"); print(json.dumps({"got": d["input"]["x"]}))\''
    plan = plan_of(
        tmp_path,
        Step(id="cmd", kind="agent", agent=AgentSpec(kind="command", command=script)),
        inputs={"x": 41},
    )
    state = await api.run_plan(store, plan)
    assert state.status == "succeeded", state.steps["cmd"].error
    assert state.result == {"got": 41}
    texts = [json.loads(r.body).get("text") for r in await store.read_all(agent_stream(state.run_id, "cmd"))]
    assert "working" in texts


async def test_command_agent_timeout_kills_the_whole_process_group(store: SqliteStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sh -c 'sleep 60 & echo $! > {pidfile}; wait'"
    plan = plan_of(
        tmp_path,
        Step(
            id="hang",
            kind="agent",
            agent=AgentSpec(kind="command", command=script),
            timeout_s=0.5,
            retry=RetryPolicy(max_attempts=1),
        ),
    )
    state = await api.run_plan(store, plan)
    assert state.steps["hang"].status == "failed"
    assert "timeout" in (state.steps["hang"].error or "")
    grandchild = int(pidfile.read_text())
    # the group was SIGKILLed: the grandchild is gone a moment later, and did not outlive the timeout
    await async_wait_until(lambda: not alive(grandchild), timeout=30, what="the backgrounded grandchild to die")


async def step_status(store: SqliteStore, run_id: str, step: str, status: str) -> bool:
    return (await api.load_run(store, run_id)).steps[step].status == status


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes, in a container, is dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


async def test_environment_is_an_allow_list(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("GRANTED_TOKEN", "ok")
    env_dump = "python3 -c 'import json,os; print(json.dumps(sorted(os.environ)))'"
    plan = plan_of(
        tmp_path,
        Step(id="e", kind="agent", agent=AgentSpec(kind="command", command=env_dump, env=("GRANTED_TOKEN",))),
    )
    state = await api.run_plan(store, plan)
    assert "GRANTED_TOKEN" in state.result
    assert "SECRET_TOKEN" not in state.result


async def test_budget_stops_new_calls_and_keeps_partial_results(store: SqliteStore, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["first answer is long enough to cost tokens" * 5]))
    llm = AgentSpec(kind="llm", model=f"scripted:{answers}")
    plan = plan_of(
        tmp_path,
        Step(id="one", kind="agent", agent=llm, prompt="go"),
        Step(id="two", kind="agent", agent=llm, prompt="go", after=("one",)),
        Step(id="three", kind="agent", agent=llm, prompt="go", after=("two",)),
        budget=Budget(max_tokens=60),
    )
    state = await api.run_plan(store, plan, options=RunOptions(use_cache=False))
    assert state.status == "budget_exhausted"
    assert state.steps["one"].status == "succeeded"
    assert state.usage.total_tokens >= 60
    assert "budget exhausted" in (state.steps["two"].skipped_reason or "")
    assert state.steps["three"].skipped_reason == "input two did not succeed"


async def test_result_cache_serves_confident_results(store: SqliteStore, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"answer": "42", "confidence": 0.95}]))
    llm = AgentSpec(kind="llm", model=f"scripted:{answers}")
    plan = plan_of(tmp_path, Step(id="ask", kind="agent", agent=llm, prompt="q", output=f"{AGENTS}:Scored"))
    first = await api.run_plan(store, plan)
    second = await api.run_plan(store, plan)
    third = await api.run_plan(store, plan, options=RunOptions(use_cache=False))
    assert first.steps["ask"].cached is False
    assert second.steps["ask"].cached is True
    assert second.result == {"answer": "42", "confidence": 0.95}
    assert third.steps["ask"].cached is False


async def test_unconfident_results_are_not_cached(store: SqliteStore, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"answer": "maybe", "confidence": 0.3}]))
    llm = AgentSpec(kind="llm", model=f"scripted:{answers}")
    plan = plan_of(tmp_path, Step(id="ask", kind="agent", agent=llm, prompt="q", output=f"{AGENTS}:Scored"))
    await api.run_plan(store, plan)
    again = await api.run_plan(store, plan)
    assert again.steps["ask"].cached is False
    assert again.steps["ask"].confidence == 0.3


async def test_verify_command_sets_confidence(store: SqliteStore, tmp_path: Path) -> None:
    def with_verify(step_id: str, verify: str) -> Step:
        return Step(id=step_id, kind="agent", agent=AgentSpec(kind="python", ref=f"{AGENTS}:chatty"), verify=verify)

    plan = plan_of(
        tmp_path,
        with_verify("good", "python3 -c 'import json,sys; assert json.load(sys.stdin)[\"said\"] == 5'"),
        with_verify("bad", "exit 3"),
    )
    state = await api.run_plan(store, plan)
    assert state.steps["good"].confidence == 1.0
    assert state.steps["bad"].confidence == 0.0


async def test_python_rule_and_schema_conflicts(store: SqliteStore, tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        py("a", "view", output=f"{AGENTS}:View"),
        merge(
            "m", "a", target=f"{AGENTS}:Scored", rules=(RuleSpec(name="r", kind="python", ref=f"{__name__}:no_mysql"),)
        ),
    )
    state = await api.run_plan(store, plan)
    kinds = sorted(c.kind for c in state.conflicts)
    assert kinds == ["schema"]  # the document has no `answer`: recorded, not crashed


def no_mysql(document: dict[str, Any]) -> list[Any]:
    return []
