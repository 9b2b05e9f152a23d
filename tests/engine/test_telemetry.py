"""OpenTelemetry: a fan-out run's span tree, exported to the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from parallax import telemetry
from parallax.engine import api
from parallax.engine.control import control_stream, read_events
from parallax.patterns.yaml_loader import load_pattern
from parallax.streams.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.set_tracer_provider(None)
        provider.shutdown()


async def test_a_fan_out_run_is_one_trace(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    plan = load_pattern(ROOT / "examples" / "fanout.yaml")
    async with SqliteStore(tmp_path / "t.db") as store:
        state = await api.run_plan(store, plan, run_id="traced")
        events = await read_events(store, control_stream("traced"))
    assert state.status == "succeeded"
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    run = by_name["parallax.run"]
    assert run.parent is None
    assert run.attributes["parallax.run_id"] == "traced"
    assert run.attributes["parallax.stream"] == "runs/traced/control"
    assert run.attributes["parallax.status"] == "succeeded"
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}  # one trace

    reviewers = ("performance", "correctness", "operations")
    outputs = {e.step: e.seq_num for e in events if e.type == "step.output"}
    for reviewer in reviewers:
        step = by_name[f"parallax.step {reviewer}"]
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        assert step.attributes["parallax.seq"] == outputs[reviewer]  # links back to the record
        assert step.attributes["parallax.status"] == "succeeded"
        # The model call, under its step, in the GenAI conventions.
        calls = [s for s in finished if s.name.startswith("chat ") and s.attributes["parallax.step"] == reviewer]
        assert len(calls) == 1
        call = calls[0]
        assert call.parent is not None and call.parent.span_id == step.context.span_id
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.provider.name"] == "scripted"
        assert call.attributes["gen_ai.usage.input_tokens"] > 0
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
        assert call.attributes["parallax.stream"] == f"runs/traced/agents/{reviewer}"
    merge = by_name["parallax.merge merge"]
    assert merge.parent is not None and merge.parent.span_id == run.context.span_id
    assert merge.attributes["parallax.seq"] == outputs["merge"]
    # Every span ended inside the run's.
    assert all(run.start_time <= s.start_time and s.end_time <= run.end_time for s in finished)


async def test_tracing_is_off_without_a_provider(tmp_path: Path) -> None:
    assert telemetry.configure_from_env({}) is False
    assert telemetry.configure_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is False
    with telemetry.span("nothing") as current:  # the global no-op provider: spans cost nothing
        current.set_attribute("x", 1)


def test_tool_calls_and_claims_have_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    """The coder test's task graph (scripted tool calls in a real worktree), traced."""
    from tests.agents.test_coder import test_coder_fixes_a_bug_with_tools_confined_to_its_worktree as coder_run

    coder_run(tmp_path)
    finished = spans.get_finished_spans()
    tools = [s for s in finished if s.name.startswith("execute_tool ")]
    assert [s.attributes["gen_ai.tool.name"] for s in tools][:3] == ["list_files", "search", "read_file"]
    assert all(s.attributes["gen_ai.operation.name"] == "execute_tool" for s in tools)
    assert all(s.attributes["parallax.stream"] == "runs/t/agents/fix" for s in tools)
    claims = [s for s in finished if s.name == "parallax.claim" and s.attributes.get("parallax.outcome") == "won"]
    assert [c.attributes["parallax.task"] for c in claims] == ["fix"]
    assert claims[0].attributes["parallax.stream"] == "runs/t/control"
    assert isinstance(claims[0].attributes["parallax.seq"], int)
    run = next(s for s in finished if s.name == "parallax.run")
    assert all(s.context.trace_id == run.context.trace_id for s in [*tools, *claims])
