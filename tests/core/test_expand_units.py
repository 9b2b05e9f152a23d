"""The controllers of `core/expand.py` as pure functions: a plan compiled from YAML, a state
folded from hand-written events, `expand(step, state)`, and the `Expansion` it returns. The edge
cases run end to end through the engine are in test_expand.py; these check each decision itself
(the steps added, their inputs and dependencies, the rewiring, the output and confidence)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from parallax.core.expand import approval_of, expand
from parallax.core.plan import Plan
from parallax.patterns.yaml_loader import compile_pattern
from tests.core.runlog import RunLog, failed, output

AGENT = {"kind": "python", "ref": "m:f"}


def compiled(pattern: str, agents: list[str], **doc: Any) -> Plan:
    body = {"pattern": pattern, "name": "t", "agents": {a: dict(AGENT) for a in agents}, **doc}
    return compile_pattern(yaml.safe_dump(body, sort_keys=False))


def ids(steps: list[Any]) -> list[str]:
    return [s.id for s in steps]


# Consensus


def consensus(threshold: float = 0.75, max_rounds: int = 3) -> RunLog:
    doc = {"consensus": {"field": "v", "threshold": threshold, "max_rounds": max_rounds}}
    return RunLog(compiled("consensus", ["x", "y", "z"], **doc))


def vote(winner: Any, agreement: float) -> dict[str, Any]:
    return {"document": {"winner": winner, "agreement": agreement, "votes": {"1": 2, "2": 1}}}


def test_consensus_reached_stops_with_the_winner() -> None:
    log = consensus(threshold=0.6)
    log.append(output("vote.r1", vote(1, 2 / 3)))
    out = log.decide("consensus.r1", expand)
    assert out.add == []
    assert out.rewire == {}
    assert out.confidence == 2 / 3
    assert out.output == {"winner": 1, "agreement": 2 / 3, "reached": True, "rounds": 1, "votes": {"1": 2, "2": 1},
                          "history": [{"round": 1, "winner": 1, "agreement": 2 / 3}]}  # fmt: skip


def test_consensus_not_reached_runs_another_round_with_the_previous_answers() -> None:
    log = consensus()
    log.append(output("x.r1", {"v": 1}), output("y.r1", {"v": 2}), failed("z.r1"), output("vote.r1", vote(1, 0.5)))
    out = log.decide("consensus.r1", expand)
    assert ids(out.add) == ["x.r2", "y.r2", "z.r2", "vote.r2", "consensus.r2"]
    x2, _, z2, vote2, control = out.add
    assert x2.after == ("consensus.r1",)
    assert x2.input == {"round": 2, "previous": {"x": {"v": 1}, "y": {"v": 2}}}  # z failed: not among them
    assert z2.role == "z"
    assert vote2.kind == "merge"
    assert vote2.after == ("x.r2", "y.r2", "z.r2")
    assert vote2.merge == log.step("vote.r1").merge
    assert control.after == ("vote.r2",)
    assert control.control is not None
    assert control.control.settings["round"] == 2
    assert out.rewire == {"consensus.r1": ["consensus.r2"]}
    assert out.output == {"round": 1, "winner": 1, "agreement": 0.5, "next_round": 2}
    assert out.confidence == 0.5


def test_consensus_keeps_the_history_of_earlier_rounds() -> None:
    log = consensus(max_rounds=2)
    log.append(output("vote.r1", vote(1, 0.5)))
    log.decide("consensus.r1", expand)
    log.append(output("vote.r2", vote(2, 0.6)))
    out = log.decide("consensus.r2", expand)
    assert out.add == []
    assert out.output["reached"] is False
    assert out.output["rounds"] == 2
    assert out.output["history"] == [
        {"round": 1, "winner": 1, "agreement": 0.5, "next_round": 2},
        {"round": 2, "winner": 2, "agreement": 0.6},
    ]


# Cascade


def cascade(threshold: float = 0.8) -> RunLog:
    return RunLog(compiled("cascade", ["cheap", "mid", "big"], cascade={"threshold": threshold}))


def test_a_confident_tier_is_accepted() -> None:
    log = cascade()
    log.append(output("cheap", {"a": 1}, confidence=0.9))
    out = log.decide("cascade.1", expand)
    assert out.add == []
    assert out.confidence == 0.9
    assert out.output == {"answer": {"a": 1}, "tier": 1, "role": "cheap", "model": None, "confidence": 0.9,
                          "accepted": True, "tried": [{"tier": 1, "role": "cheap", "model": None,
                                                       "status": "succeeded", "confidence": 0.9}]}  # fmt: skip


@pytest.mark.parametrize("event", [output("cheap", {"a": 1}, confidence=0.5), failed("cheap")])
def test_an_unsure_or_failed_tier_escalates_to_the_next_one(event: Any) -> None:
    log = cascade()
    log.append(event)
    out = log.decide("cascade.1", expand)
    assert ids(out.add) == ["mid", "cascade.2"]
    mid, control = out.add
    assert mid.after == ("cascade.1",)
    assert mid.input["tier"] == 2
    assert mid.input["previous"] == {
        "answer": log.state.steps["cheap"].output,
        "confidence": event.data.get("confidence"),
    }
    assert control.after == ("mid",)
    assert control.control is not None
    assert control.control.settings["tier"] == 2
    assert out.rewire == {"cascade.1": ["cascade.2"]}
    assert out.output == {"tier": 1, "confidence": event.data.get("confidence"), "escalated_to": "mid"}


def test_a_threshold_met_exactly_is_accepted() -> None:
    log = cascade(threshold=0.5)
    log.append(output("cheap", "ok", confidence=0.5))
    assert log.decide("cascade.1", expand).output["accepted"] is True


# Map


def mapreduce(items: Any, max_items: int = 5, over: str = "input.items") -> RunLog:
    doc = {"inputs": {"items": items}, "map": {"over": over, "agent": "m", "reduce": "r", "max_items": max_items}}
    return RunLog(compiled("mapreduce", ["m", "r"], **doc))


def test_map_adds_one_step_per_item_and_the_reduce_waits_for_them_all() -> None:
    log = mapreduce(["a", "b", "c"])
    out = log.decide("split", expand)
    assert ids(out.add) == ["m.0", "m.1", "m.2"]
    assert [s.input for s in out.add] == [{"item": "a", "index": 0}, {"item": "b", "index": 1},
                                          {"item": "c", "index": 2}]  # fmt: skip
    assert all(s.after == ("split",) and s.role == "m" for s in out.add)
    assert out.rewire == {"split": ["m.0", "m.1", "m.2"]}
    assert out.output == {"items": 3, "steps": ["m.0", "m.1", "m.2"]}
    assert log.step("r").after == ("m.0", "m.1", "m.2")


def test_map_refuses_more_items_than_max_items() -> None:
    out = mapreduce([1, 2, 3], max_items=2).decide("split", expand)
    assert out.error == "map over input.items: 3 items is more than max_items (2)"
    assert out.add == []
    assert mapreduce([1, 2], max_items=2).decide("split", expand).error is None


def test_map_over_a_missing_field_says_so() -> None:
    out = mapreduce([1], over="input.missing").decide("split", expand)
    assert out.error is not None
    assert out.error.startswith("map over input.missing: ")


# Review


def review(approve_at: float = 0.6, max_rounds: int = 3) -> RunLog:
    doc = {"review": {"author": "w", "approve_at": approve_at, "max_rounds": max_rounds}}
    return RunLog(compiled("review", ["w", "r1", "r2"], **doc))


def verdict(approve: bool, confidence: float = 1.0, *comments: str) -> dict[str, Any]:
    return {"approve": approve, "confidence": confidence, "comments": list(comments)}


def test_approval_is_the_confidence_weighted_share_of_approving_reviewers() -> None:
    assert approval_of({"a": verdict(True, 0.9), "b": verdict(False, 0.3)}) == 0.75
    assert approval_of({"a": verdict(True), "b": verdict(False)}) == 0.5
    assert approval_of({"a": verdict(False), "b": "not a verdict"}) == 0.0
    assert approval_of({}) == 0.0


def test_an_approved_draft_is_the_result() -> None:
    log = review()
    log.append(output("w.r1", "draft 1"), output("r1.r1", verdict(True, 0.9)), failed("r2.r1"))
    out = log.decide("review.r1", expand)
    assert out.add == []
    assert out.confidence == 1.0
    assert out.output == {"draft": "draft 1", "approved": True, "approval": 1.0, "rounds": 1,
                          "reviews": {"r1": verdict(True, 0.9)}, "missing_reviews": ["r2"]}  # fmt: skip


def test_a_draft_below_approve_at_goes_back_to_the_author_with_the_reviews() -> None:
    log = review()
    reviews = {"r1": verdict(True, 0.5), "r2": verdict(False, 1.0, "too long")}
    log.append(output("w.r1", "draft 1"), output("r1.r1", reviews["r1"]), output("r2.r1", reviews["r2"]))
    out = log.decide("review.r1", expand)
    assert ids(out.add) == ["w.r2", "r1.r2", "r2.r2", "review.r2"]
    author, r1, _, control = out.add
    assert author.after == ("review.r1",)
    assert author.input == {"round": 2, "draft": "draft 1", "reviews": reviews}
    assert (r1.after, r1.input) == (("w.r2",), {"round": 2})
    assert control.after == ("r1.r2", "r2.r2")
    assert control.control is not None
    assert control.control.settings["round"] == 2
    assert out.rewire == {"review.r1": ["review.r2"]}
    assert out.output == {"round": 1, "approval": 0.3333, "revise": True}


def test_a_review_without_a_draft_fails() -> None:
    log = review()
    log.append(failed("w.r1"), output("r1.r1", verdict(True)), output("r2.r1", verdict(True)))
    assert log.decide("review.r1", expand).error == "the author (w.r1) did not produce a draft"


# Org chart


def orgchart(low: int = 1, high: int = 2) -> RunLog:
    roles = {"boss": dict(AGENT), "lead": {**AGENT, "reports_to": "boss"},
             "dev": {**AGENT, "reports_to": "lead", "instances": {"min": low, "max": high}}}  # fmt: skip
    doc = {
        "pattern": "orgchart",
        "name": "t",
        "roles": roles,
        "escalation": {"below": 0.8, "max_depth": 2, "user_timeout_s": 60},
        "workflow": [
            {"assign": {"from": "lead", "to": "dev"}},
            {"review": {"by": "lead"}},
            {"aggregate": {"by": "boss"}},
        ],
    }
    return RunLog(compile_pattern(yaml.safe_dump(doc, sort_keys=False)))


def test_tasks_are_dealt_round_robin_over_at_most_max_instances() -> None:
    log = orgchart(low=1, high=2)
    log.append(output("assign.1", {"tasks": ["t1", "t2", "t3"]}))
    out = log.decide("distribute.1", expand)
    assert ids(out.add) == ["dev.1.t1", "dev.2.t2", "dev.1.t3"]
    t1, t2, t3 = out.add
    assert t1.after == t2.after == ("assign.1", "distribute.1")
    assert t3.after == ("dev.1.t1",)  # one instance's tasks run in order
    assert t3.input == {"task": "t3", "instance": 1}
    assert out.rewire == {"distribute.1": ["dev.1.t3", "dev.2.t2"]}
    assert out.output == {"tasks": 3, "instances": 2, "steps": ["dev.1.t1", "dev.2.t2", "dev.1.t3"]}
    assert log.step("review.2").after == ("dev.1.t3", "dev.2.t2")


def test_min_instances_are_used_even_for_fewer_tasks() -> None:
    log = orgchart(low=3, high=4)
    log.append(output("assign.1", {"tasks": ["only"]}))
    out = log.decide("distribute.1", expand)
    assert out.output == {"tasks": 1, "instances": 3, "steps": ["dev.1.t1"]}


def test_an_assignment_without_tasks_fails() -> None:
    log = orgchart()
    log.append(output("assign.1", {"tasks": []}))
    assert log.decide("distribute.1", expand).error == "assign.1 assigned no tasks"


def escalation(verdict_output: Any) -> RunLog:
    """A one-task org chart whose reviewer (lead, reporting to boss) returned `verdict_output`
    (None: the review failed)."""
    log = orgchart()
    log.append(output("assign.1", {"tasks": ["t1"]}))
    log.decide("distribute.1", expand)
    log.append(output("dev.1.t1", "the work"))
    log.append(failed("review.2") if verdict_output is None else output("review.2", verdict_output))
    return log


def test_a_confident_approval_stands() -> None:
    out = escalation(verdict(True, 0.8)).decide("review.2.check.0", expand)
    assert out.add == []
    assert out.output == {"approved": True, "by": "lead", "depth": 0}
    assert out.confidence == 0.8


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (verdict(True, 0.5, "unsure"), "unsure"),
        (verdict(False, 1.0), "not approved"),
        (None, "review.2 did not answer"),
    ],
)
def test_an_unsure_or_negative_verdict_goes_to_the_judges_manager(given: Any, reason: str) -> None:
    log = escalation(given)
    out = log.decide("review.2.check.0", expand)
    assert ids(out.add) == ["review.2.escalated.1", "review.2.check.1"]
    judge, control = out.add
    assert judge.role == "boss"
    assert judge.after == ("review.2.check.0",)
    assert judge.input == {"escalated_from": "lead", "reason": reason, "verdict": given, "depth": 1,
                           "work": ["the work"]}  # fmt: skip
    assert control.after == ("review.2.escalated.1",)
    assert control.control is not None
    assert control.control.settings["depth"] == 1
    assert out.rewire == {"review.2.check.0": ["review.2.check.1"]}
    assert out.output == {"approved": False, "escalated_to": "boss", "reason": reason, "depth": 0}


def test_past_the_top_of_the_chain_a_person_decides() -> None:
    log = escalation(verdict(False, 1.0, "no"))
    log.decide("review.2.check.0", expand)
    log.append(output("review.2.escalated.1", verdict(False, 0.9, "still no", "really")))
    out = log.decide("review.2.check.1", expand)
    assert ids(out.add) == ["review.2.user"]
    gate = out.add[0]
    assert gate.kind == "gate"
    assert gate.after == ("review.2.check.1",)
    assert gate.gate is not None
    assert (gate.gate.kind, gate.gate.timeout_s) == ("approval", 60.0)
    assert gate.gate.prompt == "escalated past boss (still no; really); approve to continue, reject to stop the run"
    assert out.output == {"approved": False, "escalated_to": "user", "reason": "still no; really", "depth": 1}
    assert out.rewire == {"review.2.check.1": ["review.2.user"]}


def test_a_confident_approval_by_the_manager_stands() -> None:
    log = escalation(verdict(False, 1.0, "no"))
    log.decide("review.2.check.0", expand)
    log.append(output("review.2.escalated.1", verdict(True, 0.9)))
    out = log.decide("review.2.check.1", expand)
    assert out.output == {"approved": True, "by": "boss", "depth": 1}
