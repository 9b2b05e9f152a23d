"""The run-state fold on its own: hand-made control-stream events in, `RunState` out. No store,
no engine: each test writes the events a run would have recorded and checks what the fold makes
of them (step statuses, usage, conflicts, gates, a plan grown by `steps.added`, and the events it
must not apply twice)."""

from __future__ import annotations

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.plan import AgentSpec, ControlSpec, GateSpec, Plan, Step
from parallax.core.state import describe_gap, fold
from parallax.core.tasks import TaskGraphSpec, TaskSpec
from tests.core.runlog import created, on_log, output

AGENT = AgentSpec(kind="python", ref="m:f")


def agent(step_id: str, *after: str) -> Step:
    return Step(id=step_id, kind="agent", agent=AGENT, after=after)


def plan_of(*steps: Step) -> Plan:
    return Plan(name="p", steps=steps)


def test_a_created_run_has_its_plan_and_every_step_pending() -> None:
    plan = plan_of(agent("a"), agent("b", "a"))
    state = fold(on_log(created(plan, source="p.yaml")))
    assert state.run_id == "r"
    assert state.plan == plan
    assert state.plan_hash == plan.content_hash()
    assert state.source == "p.yaml"
    assert state.created_at == 1000
    assert state.status == "running"
    assert {k: s.status for k, s in state.steps.items()} == {"a": "pending", "b": "pending"}
    assert state.next_seq == 1


def test_started_then_output_succeeds_the_step_and_counts_usage_on_the_step_and_the_run() -> None:
    plan = plan_of(agent("a"), agent("b"))
    usage_a = {"requests": 1, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}
    usage_b = {"requests": 2, "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.5}
    events = on_log(
        created(plan),
        Event(ev.STEP_STARTED, {"attempt": 1}, step="a"),
        output("a", {"x": 1}, confidence=0.75, usage=usage_a, cached=True),
        output("b", "B", usage=usage_b),
    )
    running = fold(events[:2])
    assert running.steps["a"].status == "running"
    assert running.steps["a"].attempts == 1
    assert running.steps["a"].started_at == 1001
    state = fold(events)
    a = state.steps["a"]
    assert (a.status, a.output, a.confidence, a.cached) == ("succeeded", {"x": 1}, 0.75, True)
    assert (a.finished_at, a.output_seq) == (1002, 2)
    assert a.usage.as_dict() == usage_a
    assert state.steps["b"].confidence is None
    assert state.steps["b"].cached is False
    assert state.usage.as_dict() == {"requests": 3, "input_tokens": 11, "output_tokens": 6, "cost_usd": 0.75}
    assert state.usage.total_tokens == 17


def test_a_second_output_for_a_step_changes_nothing() -> None:
    plan = plan_of(agent("a"))
    usage = {"requests": 1, "input_tokens": 7}
    state = fold(on_log(created(plan), output("a", "first", usage=usage), output("a", "second", usage=usage)))
    assert state.steps["a"].output == "first"
    assert state.steps["a"].output_seq == 1
    assert state.usage.requests == 1
    assert state.usage.input_tokens == 7


def test_events_already_folded_are_skipped_by_position() -> None:
    plan = plan_of(agent("a"), agent("b"))
    events = on_log(created(plan), output("a", "A", usage={"requests": 1}), Event(ev.CONFLICT_FOUND, {
        "conflict": {"kind": "gap", "path": "b", "message": "missing"}}))  # fmt: skip
    state = fold(events)
    fold(events, state)  # an overlapping re-read
    assert state.usage.requests == 1
    assert len(state.conflicts) == 1
    assert state.next_seq == 3
    # anything at a position already folded is skipped, whatever it says
    late = Event(ev.STEP_FAILED, {"error": "boom"}, step="b", seq_num=1, timestamp=5000)
    state.apply(late)
    assert state.steps["b"].status == "pending"
    assert state.steps["b"].failures == 0
    # an event with no position (never read from a stream) is applied as it is
    state.apply(Event(ev.STEP_FAILED, {"error": "boom"}, step="b"))
    assert state.steps["b"].status == "failed"
    assert state.next_seq == 3


def test_a_failure_that_is_not_final_keeps_the_step_going_and_a_final_one_ends_it() -> None:
    plan = plan_of(agent("a"))
    events = on_log(
        created(plan),
        Event(ev.STEP_STARTED, {"attempt": 1}, step="a"),
        Event(ev.STEP_FAILED, {"error": "timeout", "final": False, "usage": {"requests": 1}}, step="a"),
        Event(ev.STEP_STARTED, {"attempt": 2}, step="a"),
        Event(ev.STEP_FAILED, {"error": "boom", "usage": {"requests": 1}}, step="a"),
        Event(ev.STEP_STARTED, {"attempt": 3}, step="a"),  # too late: the step is done
    )
    retrying = fold(events[:3])
    assert retrying.steps["a"].status == "running"
    assert retrying.steps["a"].failures == 1
    assert retrying.steps["a"].error == "timeout"
    assert retrying.steps["a"].finished_at is None
    state = fold(events)
    a = state.steps["a"]
    assert (a.status, a.error, a.failures, a.attempts, a.finished_at) == ("failed", "boom", 2, 2, 1004)
    assert a.usage.requests == 2
    assert state.usage.requests == 2
    assert describe_gap(a) == "failed (boom)"


def test_a_restart_clears_the_previous_error_and_attempts_never_go_back() -> None:
    plan = plan_of(agent("a"))
    state = fold(on_log(
        created(plan),
        Event(ev.STEP_STARTED, {"attempt": 3}, step="a"),
        Event(ev.STEP_FAILED, {"error": "timeout", "final": False}, step="a"),
        Event(ev.STEP_STARTED, {"attempt": 2}, step="a"),
    ))  # fmt: skip
    assert state.steps["a"].attempts == 3
    assert state.steps["a"].error is None
    assert state.steps["a"].started_at == 1003


def test_a_skipped_step_keeps_its_reason_and_ignores_later_starts() -> None:
    plan = plan_of(agent("a"), agent("b", "a"))
    state = fold(on_log(
        created(plan),
        Event(ev.STEP_SKIPPED, {"reason": "a failed"}, step="b"),
        Event(ev.STEP_STARTED, {"attempt": 1}, step="b"),
        Event(ev.STEP_FAILED, {"error": "late"}, step="b"),
    ))  # fmt: skip
    b = state.steps["b"]
    assert (b.status, b.skipped_reason, b.finished_at, b.attempts, b.error) == ("skipped", "a failed", 1001, 0, None)
    assert b.done
    assert describe_gap(b) == "was skipped (a failed)"


def test_only_the_first_escalation_of_a_step_is_kept() -> None:
    plan = plan_of(agent("a"))
    state = fold(on_log(
        created(plan),
        Event(ev.STEP_STARTED, {"attempt": 2}, step="a"),
        Event(ev.STEP_ESCALATED, {"model": "big"}, step="a"),
        Event(ev.STEP_ESCALATED, {"model": "bigger", "attempt": 5}, step="a"),
    ))  # fmt: skip
    assert state.steps["a"].escalated_model == "big"
    assert state.steps["a"].escalated_at == 2


def control_plan() -> Plan:
    control = Step(id="c", kind="control", after=("a",), control=ControlSpec(kind="map"))
    return plan_of(agent("a"), control, agent("z", "c"))


def test_steps_added_grow_the_plan_and_hand_the_controls_dependents_over() -> None:
    added = {
        "steps": [agent("m.0", "c").model_dump(mode="json"), agent("m.1", "c").model_dump(mode="json")],
        "rewire": {"c": ["m.0", "m.1"]},
        "session": {"name": "moderator", "rounds": 1},
        "applied": {"7": "steered a"},
    }
    state = fold(on_log(created(control_plan()), Event(ev.STEPS_ADDED, added, step="c")))
    assert state.plan is not None
    assert [s.id for s in state.plan.steps] == ["a", "c", "z", "m.0", "m.1"]
    assert state.plan.step("z").after == ("m.0", "m.1")
    assert state.plan.step("m.1").after == ("c",)
    assert state.steps["m.0"].status == "pending"
    assert state.sessions == {"moderator": {"name": "moderator", "rounds": 1}}
    assert state.applied == {7: "steered a"}


def test_steps_added_skips_steps_the_plan_already_has_and_the_newest_session_wins() -> None:
    first = {"steps": [agent("m.0", "c").model_dump(mode="json")], "rewire": {"c": ["m.0"]},
             "session": {"name": "s", "round": 1}}  # fmt: skip
    again = {"steps": [agent("m.0", "c").model_dump(mode="json"), agent("m.1", "m.0").model_dump(mode="json")],
             "session": {"name": "s", "round": 2}}  # fmt: skip
    state = fold(on_log(
        created(control_plan()),
        Event(ev.STEPS_ADDED, first, step="c"),
        output("m.0", "done"),
        Event(ev.STEPS_ADDED, again, step="c"),
    ))  # fmt: skip
    assert state.plan is not None
    assert [s.id for s in state.plan.steps] == ["a", "c", "z", "m.0", "m.1"]
    assert state.plan.step("z").after == ("m.0",)
    assert state.steps["m.0"].status == "succeeded"  # its state is kept, not reset
    assert state.steps["m.1"].status == "pending"
    assert state.sessions["s"]["round"] == 2


def test_steps_added_before_the_run_exists_are_ignored() -> None:
    state = fold(on_log(Event(ev.STEPS_ADDED, {"steps": [agent("x").model_dump(mode="json")]})))
    assert state.plan is None
    assert state.steps == {}


def test_topology_requests_wait_until_they_are_applied() -> None:
    state = fold(on_log(
        created(plan_of(agent("a"))),
        Event(ev.TOPOLOGY_REQUESTED, {"by": "ann", "action": {"action": "stop", "stream": "x"}}),
        Event(ev.TOPOLOGY_REQUESTED, {"by": "bob", "action": {"action": "conclude"}}),
    ))  # fmt: skip
    assert [seq for seq, _ in state.pending_requests] == [1, 2]
    assert state.requests[2]["by"] == "bob"
    fold(on_log(Event(ev.TOPOLOGY_APPLIED, {"applied": {"1": "refused: no active cohort 'x'"}}), start=3), state)
    assert [(seq, r["by"]) for seq, r in state.pending_requests] == [(2, "bob")]
    assert state.applied == {1: "refused: no active cohort 'x'"}


def test_conflicts_are_kept_in_order_as_conflicts() -> None:
    found = [Event(ev.CONFLICT_FOUND, {"conflict": {"kind": k, "path": p, "message": "m", "agents": ["a", "b"]}})
             for k, p in (("disagreement", "x.y"), ("gap", "b"))]  # fmt: skip
    state = fold(on_log(created(plan_of(agent("a"))), *found))
    assert [(c.kind, c.path, c.agents) for c in state.conflicts] == [
        ("disagreement", "x.y", ("a", "b")),
        ("gap", "b", ("a", "b")),
    ]


def test_a_gate_waits_and_its_first_decision_stands() -> None:
    gate = Step(id="g", kind="gate", after=("a",), gate=GateSpec(kind="approval"))
    state = fold(on_log(
        created(plan_of(agent("a"), gate)),
        Event(ev.GATE_WAITING, {}, step="g"),
        Event(ev.GATE_WAITING, {}, step="g"),
        Event(ev.GATE_DECIDED, {"approved": True, "by": "ann", "note": "ok"}, step="g"),
        Event(ev.GATE_DECIDED, {"approved": False, "by": "bob"}, step="g"),
    ))  # fmt: skip
    assert state.steps["g"].status == "waiting"
    assert state.steps["g"].started_at == 1001  # the first wait, not the second
    decision = state.gate_decisions["g"]
    assert (decision.approved, decision.by, decision.note, decision.seq_num) == (True, "ann", "ok", 3)


def test_circuits_budget_and_cancellation_are_recorded() -> None:
    state = fold(on_log(created(plan_of(agent("a")))))
    assert (state.budget_exhausted, state.cancel_requested, state.circuits) == (False, False, {})
    fold(on_log(
        Event(ev.CIRCUIT_CHANGED, {"provider": "openai", "state": "open"}),
        Event(ev.CIRCUIT_CHANGED, {"provider": "openai", "state": "half_open"}),
        Event(ev.BUDGET_EXHAUSTED, {}),
        Event(ev.RUN_CANCEL_REQUESTED, {"reason": "enough"}),
        start=1,
    ), state)  # fmt: skip
    assert state.circuits == {"openai": "half_open"}
    assert state.budget_exhausted
    assert state.cancel_requested
    assert state.status == "running"  # asking is not finishing


def test_a_finished_run_takes_its_result_from_its_result_steps() -> None:
    plan = plan_of(agent("a"), agent("b"))
    outputs = [output("a", "A"), output("b", "B")]
    single = fold(on_log(created(plan), *outputs, Event(ev.RUN_FINISHED, {
        "status": "succeeded", "result_steps": ["b"], "single_result": True})))  # fmt: skip
    assert (single.status, single.result, single.finished_at, single.finished) == ("succeeded", "B", 1003, True)
    several = fold(on_log(created(plan), *outputs, Event(ev.RUN_FINISHED, {
        "status": "failed", "result_steps": ["a", "b", "gone"], "single_result": False})))  # fmt: skip
    assert several.status == "failed"
    assert several.result == {"a": "A", "b": "B"}
    given = fold(on_log(created(plan), Event(ev.RUN_FINISHED, {"status": "cancelled", "result": {"why": "x"}})))
    assert (given.status, given.result) == ("cancelled", {"why": "x"})


def test_resuming_sets_the_coordinator_and_reopens_only_an_unfinished_run() -> None:
    plan = plan_of(agent("a"))
    open_run = fold(on_log(created(plan), Event(ev.RUN_RESUMED, {"coordinator": "w1"})))
    assert (open_run.status, open_run.coordinator) == ("running", "w1")
    done = fold(on_log(
        created(plan), Event(ev.RUN_FINISHED, {"status": "succeeded"}), Event(ev.RUN_RESUMED, {"coordinator": "w2"})
    ))  # fmt: skip
    assert (done.status, done.coordinator) == ("succeeded", "w2")


def test_a_fork_takes_a_new_id_and_plan_keeps_the_folded_steps_and_clears_the_result() -> None:
    plan = plan_of(agent("a"))
    grown = plan_of(agent("a"), agent("b", "a"))
    state = fold(on_log(
        created(plan, run_id="orig"),
        output("a", "A"),
        Event(ev.RUN_FINISHED, {"status": "succeeded", "result_steps": ["a"], "single_result": True}),
        Event(ev.RUN_FORKED, {"run_id": "copy", "from_run": "orig", "at_seq": 2,
                              "plan": grown.model_dump(mode="json"), "plan_hash": grown.content_hash()}),
    ))  # fmt: skip
    assert (state.run_id, state.forked_from, state.status) == ("copy", ("orig", 2), "running")
    assert (state.result, state.finished_at) == (None, None)
    assert state.plan == grown
    assert state.steps["a"].output == "A"  # what the original run did stays done
    assert state.steps["b"].status == "pending"


def test_task_events_build_the_board_from_the_plans_task_graph() -> None:
    graph = TaskGraphSpec(tasks=(TaskSpec(id="t1", writes=("src/a.py",), agent=AGENT),
                                 TaskSpec(id="t2", after=("t1",), writes=("src/b.py",), agent=AGENT)))  # fmt: skip
    tasks_step = Step(id="tasks", kind="tasks", tasks=graph.model_dump(mode="json"))
    claim = Event("task.claimed", {"task": "t1", "worker": "w", "lease_until": 10_000})
    state = fold(on_log(created(plan_of(tasks_step)), claim))
    assert state.tasks is not None
    assert state.tasks.tasks["t1"].status == "claimed"
    assert state.tasks.tasks["t1"].holder == "w"
    assert state.tasks.tasks["t2"].status == "pending"
    # a run without a task graph has no board, whatever task events say
    plain = fold(on_log(created(plan_of(agent("a"))), claim))
    assert plain.tasks is None
    before_the_plan = fold(on_log(claim))
    assert before_the_plan.tasks is None
