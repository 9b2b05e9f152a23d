from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from parallax.core.plan import AgentSpec, MergeSpec, Plan, RuleSpec, Step, find_cycle


def agent(step_id: str, *after: str) -> Step:
    return Step(id=step_id, kind="agent", after=after, agent=AgentSpec(kind="python", ref="m:f"))


def test_same_input_same_plan_and_hash() -> None:
    def build() -> Plan:
        return Plan(name="p", steps=(agent("a"), agent("b", "a")), inputs={"x": [1, {"y": 2}]})

    one, two = build(), build()
    assert one == two
    assert one.content_hash() == two.content_hash()
    assert len(one.content_hash()) == 64


def test_hash_changes_with_any_field() -> None:
    base = Plan(name="p", steps=(agent("a"),))
    changed = Plan(name="p", steps=(agent("a"),), concurrency=3)
    assert base.content_hash() != changed.content_hash()


def test_json_round_trip_is_exact() -> None:
    rule = RuleSpec.model_validate({"name": "r", "kind": "every", "each": "a.b[*]", "in": "c.d[*].e"})
    plan = Plan(
        name="p",
        steps=(agent("a"), Step(id="m", kind="merge", after=("a",), merge=MergeSpec(rules=(rule,)))),
    )
    again = Plan.model_validate_json(plan.canonical_json())
    assert again == plan
    assert again.canonical_json() == plan.canonical_json()
    assert json.loads(plan.canonical_json())["steps"][1]["merge"]["rules"][0]["in"] == "c.d[*].e"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "at least one step"),
        ((agent("a"), agent("a")), "used twice"),
        ((agent("a", "zzz"),), "unknown step 'zzz'"),
        ((agent("a", "b"), agent("b", "a")), "cycle"),
    ],
)
def test_invalid_graphs_are_refused(steps: tuple[Step, ...], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Plan(name="p", steps=steps)


def test_step_kind_must_match_its_spec() -> None:
    with pytest.raises(ValidationError, match="needs `merge`"):
        Step(id="m", kind="merge", after=("a",))
    with pytest.raises(ValidationError, match="also sets agent"):
        Step(id="m", kind="merge", after=("a",), merge=MergeSpec(), agent=AgentSpec(kind="python", ref="m:f"))
    with pytest.raises(ValidationError, match="needs `model`"):
        AgentSpec(kind="llm")
    with pytest.raises(ValidationError, match="not a field path"):
        RuleSpec(name="r", kind="disjoint", left="a..b", right="c")


def test_topological_order_is_deterministic_and_complete() -> None:
    plan = Plan(name="p", steps=(agent("c", "a", "b"), agent("b", "a"), agent("a"), agent("d")))
    assert plan.topological_order() == ["a", "b", "c", "d"]  # among ready steps, declaration order
    assert plan.sinks() == ["c", "d"]


def test_find_cycle_handles_deep_chains() -> None:
    chain = {f"s{i}": (f"s{i + 1}",) for i in range(5000)}
    chain["s5000"] = ()
    assert find_cycle(chain) is None
    chain["s5000"] = ("s0",)
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1]
