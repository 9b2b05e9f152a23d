"""Typed event payloads: what the engine writes is what the fold reads, defaults stay off the
log, and records written before the payloads existed (missing or extra keys) still read."""

from __future__ import annotations

from parallax.core import events as ev
from parallax.core.events import Event, decode_event
from parallax.core.state import fold


def _through_a_record(event: Event, seq: int) -> Event:
    headers, body = event.encode()
    decoded = decode_event(headers, body, seq, 1000 + seq)
    assert decoded is not None
    return decoded


def test_a_payload_round_trips_through_a_record_and_leaves_defaults_out() -> None:
    output = ev.StepOutput({"verdict": "ship"}, 0.8, {"input_tokens": 5}, attempt=2)
    event = _through_a_record(output.event("a", "a"), 0)
    assert event.type == "step.output" and event.step == "a"
    assert event.data == {"output": {"verdict": "ship"}, "confidence": 0.8, "usage": {"input_tokens": 5}, "attempt": 2}
    assert ev.StepOutput.read(event) == output
    failed = ev.StepFailed("boom")  # final by default: written anyway, as readers expect it
    assert failed.data() == {"error": "boom", "final": True}
    assert ev.StepFailed("x", False, 3, "ProviderError").data() == {
        "error": "x",
        "final": False,
        "attempt": 3,
        "error_type": "ProviderError",
    }


def test_old_records_with_missing_or_extra_keys_still_read() -> None:
    old = Event("step.failed", {"error": "gone", "legacy": 1})
    assert ev.StepFailed.read(old) == ev.StepFailed("gone", final=True)
    assert ev.RunFinished.read(Event("run.finished", {"status": "succeeded", "result": 42})).result == 42
    assert ev.StepStarted.read(Event("step.started", {})).attempt is None


def test_the_fold_reads_what_the_payloads_write() -> None:
    plan = {
        "name": "p",
        "steps": [{"id": "a", "kind": "agent", "agent": {"kind": "python", "ref": "m:f"}}],
    }
    written = [
        Event("run.created", {"run_id": "r", "plan": plan}),
        ev.StepStarted(1, "python").event("a", "a"),
        ev.StepFailed("429", False, 1, "ProviderError", {"input_tokens": 3}).event("a", "a"),
        ev.StepRetry(2, 0.5).event("a"),
        ev.StepStarted(2, "python").event("a", "a"),
        ev.StepOutput({"ok": True}, 0.9, {"input_tokens": 7}, 2).event("a", "a"),
        ev.CircuitChanged("openai", "open").event(),
        ev.RunFinished("succeeded", ["a"], True, {"input_tokens": 10}).event(),
    ]
    state = fold(_through_a_record(e, seq) for seq, e in enumerate(written))
    step = state.steps["a"]
    assert (step.status, step.attempts, step.failures, step.output, step.confidence) == (
        "succeeded",
        2,
        1,
        {"ok": True},
        0.9,
    )
    assert step.usage.input_tokens == 10
    assert state.circuits == {"openai": "open"}
    assert state.status == "succeeded" and state.result == {"ok": True}
