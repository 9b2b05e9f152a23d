"""The moderator's controller as a pure function: a cohorts plan (compiled from YAML), a state
folded from hand-written events, `moderate(step, state)`, and the decision it returns. Each
decision is recorded the way the engine records it, so a test can go on round after round with
no engine, store or agent."""

from __future__ import annotations

from typing import Any

import yaml

from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.expansion import Expansion
from parallax.core.moderation import latest_positions, moderate
from parallax.core.plan import Plan
from parallax.patterns.yaml_loader import compile_pattern
from tests.core.runlog import RunLog, failed, output

AGENT = {"kind": "python", "ref": "m:f"}


def cohorts_plan(cohorts: dict[str, list[str]] | None = None, **moderator: Any) -> Plan:
    cohorts = cohorts or {"a": ["pa"], "b": ["pb"]}
    doc = {
        "pattern": "cohorts",
        "name": "t",
        "inputs": {"question": "q?"},
        "cohorts": {c: {"agents": {m: dict(AGENT) for m in members}} for c, members in cohorts.items()},
        "moderator": {**AGENT, "phases": [{"name": "one"}, {"name": "two", "prompt": "go"}], "rounds_per_phase": 2,
                      **moderator},
        "synthesis": {"model": "test"},
    }  # fmt: skip
    return compile_pattern(yaml.safe_dump(doc, sort_keys=False))


def said(position: str) -> dict[str, Any]:
    return {"position": position, "reasoning": ""}


def first_round(log: RunLog, a: str = "use postgres", b: str = "use postgres") -> None:
    log.append(output("a.pa.1", said(a)), output("b.pb.1", said(b)))


def decided(log: RunLog, *actions: dict[str, Any]) -> Expansion:
    """Round 1 is over and the moderator (asked after it) answered with `actions`."""
    first_round(log)
    log.decide("round.1", moderate)
    log.append(output("moderator.1", {"actions": list(actions)}))
    return log.decide("decide.1", moderate)


def ids(out: Expansion) -> list[str]:
    return [s.id for s in out.add]


def test_after_a_round_the_moderator_is_asked_and_the_round_hands_over_to_its_decision() -> None:
    log = RunLog(cohorts_plan())
    log.append(output("a.pa.1", said("x")), failed("b.pb.1"))
    out = log.decide("round.1", moderate)
    assert ids(out) == ["moderator.1", "decide.1"]
    moderator, decide = out.add
    assert moderator.after == ("round.1",)
    assert moderator.input == {"round": 1, "phase": "one", "phase_prompt": ""}
    assert decide.kind == "control"
    assert decide.after == ("moderator.1",)
    assert decide.control is not None
    assert (decide.control.settings["stage"], decide.control.settings["round"]) == ("decide", 1)
    assert out.rewire == {"round.1": ["decide.1"]}
    assert out.output == {"round": 1, "phase": "one", "moderator": "moderator.1"}
    assert out.session is not None
    assert (out.session["rounds"], out.session["round_in_phase"]) == (1, 1)
    assert out.session["messages"] == {"a": 1, "b": 0}  # only a turn that succeeded counts


def test_a_steer_reaches_only_its_cohorts_next_turn_and_is_then_forgotten() -> None:
    log = RunLog(cohorts_plan())
    out = decided(log, {"action": "steer", "to": "a", "text": "be concrete"})
    assert ids(out) == ["a.pa.2", "b.pb.2", "round.2"]
    a, b, control = out.add
    assert a.input["steer"] == "be concrete"
    assert b.input["steer"] == "(none)"
    assert (a.cohort, a.publish, a.after) == ("a", "runs/{run}/cohorts/a", ("decide.1",))
    assert a.reads == ("runs/{run}/inbox/a", "runs/{run}/inbox/pa")  # its own inboxes, no other cohort
    assert a.input["round"] == 2
    assert control.after == ("a.pa.2", "b.pb.2")
    assert control.control is not None
    assert (control.control.settings["stage"], control.control.settings["round"]) == ("round", 2)
    assert out.rewire == {"decide.1": ["round.2"]}
    assert out.output == {"round": 1, "next_round": 2, "phase": "one", "cohorts": ["a", "b"]}
    assert out.session is not None
    assert out.session["steer"] == {}
    assert out.session["log"][-1] == "moderator round 1: steered a"


def test_a_steer_to_all_reaches_every_cohort() -> None:
    out = decided(RunLog(cohorts_plan()), {"action": "steer", "to": "all", "text": "wrap it up"})
    assert [s.input["steer"] for s in out.add[:2]] == ["wrap it up", "wrap it up"]


def test_bad_actions_are_refused_with_their_reason_and_the_rest_still_apply() -> None:
    out = decided(
        RunLog(cohorts_plan()),
        {"action": "steer", "to": "nobody", "text": "hi"},
        {"action": "stop", "stream": "b"},
    )
    assert out.session is not None
    assert out.session["log"][-2:] == ["moderator round 1: refused: no cohort 'nobody'", "moderator round 1: stopped b"]
    assert ids(out) == ["a.pa.2", "round.2"]  # b takes no more turns


def test_an_unreadable_decision_or_no_answer_continues_as_things_stand() -> None:
    log = RunLog(cohorts_plan())
    first_round(log)
    log.decide("round.1", moderate)
    log.append(output("moderator.1", {"actions": [{"action": "explode"}]}))
    out = log.decide("decide.1", moderate)
    assert out.session is not None
    assert out.session["log"][-2:] == [
        "round 1: moderator decision unreadable (1 errors)",
        "moderator round 1: continued",
    ]
    assert ids(out) == ["a.pa.2", "b.pb.2", "round.2"]
    silent = RunLog(cohorts_plan())
    first_round(silent)
    silent.decide("round.1", moderate)
    silent.append(failed("moderator.1"))
    out = silent.decide("decide.1", moderate)
    assert out.session is not None
    assert out.session["log"][-1] == "round 1: the moderator did not answer; continuing"
    assert ids(out) == ["a.pa.2", "b.pb.2", "round.2"]


def test_a_fork_copies_the_cohort_and_its_members_take_turns_in_both() -> None:
    out = decided(RunLog(cohorts_plan()), {"action": "fork", "stream": "a", "into": "a2", "at": 3})
    assert out.forks == [("a", "a2", 3)]
    assert ids(out) == ["a.pa.2", "b.pb.2", "a2.pa.2", "round.2"]
    assert out.add[2].cohort == "a2"
    assert out.session is not None
    assert out.session["members"]["a2"] == ["pa"]
    assert out.session["log"][-1] == "moderator round 1: forked a into a2 at 3"


def test_a_merge_of_cohorts_that_disagree_records_the_disagreement() -> None:
    log = RunLog(cohorts_plan())
    log.append(output("a.pa.1", said("use postgres")), output("b.pb.1", said("use dynamodb")))
    log.decide("round.1", moderate)
    log.append(output("moderator.1", {"actions": [{"action": "merge", "streams": ["a", "b"], "into": "ab"}]}))
    out = log.decide("decide.1", moderate)
    assert out.merges == [(["a", "b"], "ab")]
    assert [(c.kind, c.path, c.agents) for c in out.conflicts] == [("disagreement", "cohorts/ab", ("a", "b"))]
    assert out.conflicts[0].values == {"a": "use postgres", "b": "use dynamodb"}
    assert ids(out) == ["ab.pa.2", "ab.pb.2", "round.2"]  # the sources stopped; the merged cohort goes on
    assert out.session is not None
    assert out.session["active"] == ["ab"]
    assert len(log.state.conflicts) == 1


def test_a_merge_of_cohorts_that_agree_records_no_conflict() -> None:
    out = decided(RunLog(cohorts_plan()), {"action": "merge", "streams": ["a", "b"], "into": "ab"})
    assert out.merges == [(["a", "b"], "ab")]
    assert out.conflicts == []


def test_a_breakout_opens_a_cohort_with_its_brief_and_exactly_the_streams_it_may_read() -> None:
    out = decided(
        RunLog(cohorts_plan()),
        {"action": "breakout", "name": "room", "prompt": "price it", "agents": ["ghost"]},
        {"action": "breakout", "name": "room", "prompt": "price it", "agents": ["pb"], "reads": ["a"]},
    )
    assert out.session is not None
    assert out.session["log"][-2].startswith("moderator round 1: refused: unknown agents ['ghost']")
    room = next(s for s in out.add if s.cohort == "room")
    assert room.id == "room.pb.2"
    assert room.input["brief"] == "price it"
    assert room.reads == ("runs/{run}/cohorts/a", "runs/{run}/inbox/room", "runs/{run}/inbox/pb")


def test_a_rewire_grants_reads_to_other_cohorts_but_never_its_own() -> None:
    out = decided(
        RunLog(cohorts_plan()),
        {"action": "rewire", "cohort": "a", "reads": ["a"]},
        {"action": "rewire", "cohort": "a", "reads": ["b"]},
    )
    assert out.session is not None
    assert out.session["log"][-2] == "moderator round 1: refused: cannot grant ['a']"
    a = out.add[0]
    assert a.reads[0] == "runs/{run}/cohorts/b"
    assert "runs/{run}/cohorts/a" not in out.add[1].reads  # b was not opened to a


def test_people_get_an_outcome_for_each_request() -> None:
    log = RunLog(cohorts_plan(cadence=5))
    first_round(log)
    log.append(
        Event(ev.TOPOLOGY_REQUESTED, {"by": "ann", "action": {"action": "stop", "stream": "zz"}}),
        Event(ev.TOPOLOGY_REQUESTED, {"by": "bob", "action": {"action": "stop", "stream": "b"}}),
    )
    out = log.decide("round.1", moderate)
    assert out.applied == {3: "refused: no active cohort 'zz'", 4: "stopped b"}
    assert ids(out) == ["a.pa.2", "round.2"]
    assert log.state.pending_requests == []  # recorded as applied by the decision


def test_conclude_asks_for_the_synthesis_with_the_divergence_of_the_cohorts() -> None:
    log = RunLog(cohorts_plan())
    log.append(output("a.pa.1", said("use postgres replicas")), output("b.pb.1", said("use postgres shards")))
    log.decide("round.1", moderate)
    log.append(output("moderator.1", {"actions": [{"action": "conclude"}]}))
    out = log.decide("decide.1", moderate)
    assert ids(out) == ["synthesis"]
    synthesis = out.add[0]
    assert (synthesis.publish, synthesis.after) == ("runs/{run}/synthesis", ("decide.1",))
    assert synthesis.input["rounds"] == 1
    assert out.rewire == {"decide.1": ["synthesis"]}
    assert out.divergence is not None
    assert set(out.divergence["similarity"]) == {"a|b"}  # the cohorts' latest turns, compared
    assert out.divergence["measures"]["jaccard-content-words"] == {"a|b": round(1 / 3, 4)}
    assert out.output == {"round": 1, "concluded": True, "divergence": out.divergence["divergence"]}
    assert out.session is not None
    assert out.session["concluded"] is True


def test_wrap_up_allows_exactly_one_more_round() -> None:
    log = RunLog(cohorts_plan(cadence=5))
    log.append(output("a.pa.1", said("x")), output("b.pb.1", said("y")))
    log.append(Event(ev.TOPOLOGY_REQUESTED, {"by": "ann", "action": {"action": "wrap_up"}}))
    out = log.decide("round.1", moderate)
    assert ids(out) == ["a.pa.2", "b.pb.2", "round.2"]
    log.append(output("a.pa.2", said("x")), output("b.pb.2", said("y")))
    out = log.decide("round.2", moderate)
    assert ids(out) == ["synthesis"]


def test_phases_advance_after_their_rounds_and_the_run_concludes_after_the_last() -> None:
    log = RunLog(cohorts_plan(cadence=5, rounds_per_phase=1))
    first_round(log)
    out = log.decide("round.1", moderate)
    assert out.output is not None
    assert out.output["phase"] == "two"
    assert out.add[0].input["phase"] == "two"
    assert out.add[0].input["phase_prompt"] == "go"
    log.append(output("a.pa.2", said("x")), output("b.pb.2", said("y")))
    assert ids(log.decide("round.2", moderate)) == ["synthesis"]


def test_a_start_phase_action_jumps_to_the_named_phase_and_an_unknown_one_is_refused() -> None:
    out = decided(
        RunLog(cohorts_plan()),
        {"action": "start_phase", "phase": "three"},
        {"action": "start_phase", "phase": "two"},
    )
    assert out.session is not None
    assert out.session["log"][-2] == "moderator round 1: refused: no phase 'three' (phases: one, two)"
    assert out.session["log"][-1] == "moderator round 1: started phase two"
    assert out.add[0].input["phase"] == "two"


def test_no_cohort_may_speak_past_max_messages_so_the_run_concludes() -> None:
    log = RunLog(cohorts_plan(cadence=5, max_messages=1))
    first_round(log)
    out = log.decide("round.1", moderate)
    assert ids(out) == ["synthesis"]
    assert out.session is not None
    assert "round 1: no cohort may take another turn" in out.session["log"]


def test_a_resumed_moderator_continues_from_its_last_session() -> None:
    log = RunLog(cohorts_plan(cadence=5))
    first_round(log)
    session = log.decide("round.1", moderate).session  # round 1 of phase one, recorded with its session
    assert session is not None
    # a later snapshot on the log (a person stopped cohort a): the controller goes on from it
    log.append(Event(ev.STEPS_ADDED, {"steps": [], "session": {**session, "active": ["b"]}}))
    log.append(output("a.pa.2", said("x")), output("b.pb.2", said("y")))
    out = log.decide("round.2", moderate)
    assert ids(out) == ["b.pb.3", "round.3"]
    assert out.session is not None
    assert (out.session["rounds"], out.session["phase"], out.session["round_in_phase"]) == (2, 1, 0)


def test_latest_positions_are_each_cohorts_newest_successful_round() -> None:
    log = RunLog(cohorts_plan({"a": ["p1", "p2"], "b": ["p3"]}, cadence=5))
    log.append(output("a.p1.1", said("old")), output("a.p2.1", {"summary": "also old"}), output("b.p3.1", "b one"))
    log.decide("round.1", moderate)
    log.append(output("a.p1.2", said("new")), output("a.p2.2", {"x": 1}), failed("b.p3.2"))
    assert latest_positions(log.state) == {"a": 'new {"x": 1}', "b": "b one"}
    assert latest_positions(log.state, ["b"]) == {"b": "b one"}
