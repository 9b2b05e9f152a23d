"""The estimate before spending (`parallax.estimate`), on the real example patterns compiled for
a real model. Expected numbers are computed here from the YAML, not from the estimate."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from genai_prices import Usage, calc_price

from parallax.core.plan import AgentSpec, ConfidencePolicy, Plan, RetryPolicy, Step
from parallax.estimate import (
    CODER_ITERATIONS,
    CODER_REQUESTS_PER_ITERATION,
    HIGH_FACTOR,
    LOW_FACTOR,
    Estimate,
    estimate_plan,
)
from parallax.model_choice import model_choice
from parallax.patterns.yaml_loader import compile_pattern, load_pattern

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SONNET = "anthropic:claude-sonnet-4-5"
AT = datetime(2025, 11, 1, tzinfo=UTC)  # prices as of a fixed day: the same answer every time


def load(name: str, model: str | None = SONNET) -> Plan:
    models = model_choice([model], (None, "")) if model else None
    return load_pattern(EXAMPLES / name, models=models)


def compile_text(name: str, data: dict[str, Any], model: str = SONNET) -> Plan:
    """An example's YAML, changed, compiled as if it were that file."""
    text = yaml.safe_dump(data, sort_keys=False)
    return compile_pattern(text, str(EXAMPLES / name), models=model_choice([model], (None, "")))


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def sonnet_price(input_tokens: int, output_tokens: int) -> float:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(
        calc_price(usage, "claude-sonnet-4-5", provider_id="anthropic", genai_request_timestamp=AT).total_price
    )


def known(est: Estimate) -> tuple[float, float]:
    """The estimate's cost, which must be known."""
    low, high = est.cost_usd
    assert low is not None and high is not None, est.cost_usd
    return low, high


def llm(step_id: str, model: str = SONNET, *after: str, **fields: Any) -> Step:
    return Step(id=step_id, kind="agent", after=after, agent=AgentSpec(kind="llm", model=model), **fields)


# Call counts


def test_fanout_calls_are_its_llm_agents_exactly() -> None:
    agents = example("fanout.yaml")["agents"]
    est = estimate_plan(load("fanout.yaml"), at=AT)
    assert est.calls == (len(agents), len(agents)) == (3, 3)
    assert est.agents == len(agents)
    assert [s.step for s in est.steps] == list(agents)
    assert est.input_tokens[0] < est.input_tokens[1]
    assert est.output_tokens[0] < est.output_tokens[1]


def test_research_cohorts_range_reaches_the_round_limit() -> None:
    data = example("research.yaml")
    moderator = data["moderator"]
    members = sum(len(c["agents"]) for c in data["cohorts"].values())
    max_rounds = moderator.get("max_rounds", len(moderator["phases"]) * moderator["rounds_per_phase"])
    per_cohort = [len(c["agents"]) for c in data["cohorts"].values()]
    # max_messages counts member turns: a cohort of m members may take ceil(max_messages / m) rounds
    rounds = min(max_rounds, max(math.ceil(moderator["max_messages"] / m) for m in per_cohort))
    moderator_turns = rounds // moderator.get("cadence", 1)
    expected_high = members * rounds + moderator_turns + 1  # + the synthesis
    est = estimate_plan(load("research.yaml"), at=AT)
    assert est.calls[0] < est.calls[1]
    assert est.calls[1] >= expected_high == 15
    # low: the first round's turns, the moderator concluding at its first turn, the synthesis
    assert est.calls[0] == members + 1 + 1
    assert est.agents == members + 2  # the members, the moderator, the synthesis
    assert any("1 to 2 rounds" in note for note in est.notes)


def test_cohort_transcripts_grow_with_the_rounds() -> None:
    est = estimate_plan(load("research.yaml"), at=AT)
    by_step = {s.step: s for s in est.steps}
    assert by_step["builders.builder-a.2"].input_tokens[1] > by_step["builders.builder-a.1"].input_tokens[1]
    assert by_step["moderator.2"].input_tokens[1] > by_step["moderator.1"].input_tokens[1]
    # the synthesis reads one round of every cohort at the low end, all of them at the high end
    synthesis = by_step["synthesis"]
    assert synthesis.input_tokens[1] / HIGH_FACTOR > synthesis.input_tokens[0] / LOW_FACTOR


def test_max_messages_cuts_the_rounds() -> None:
    data = example("research.yaml")
    data["moderator"]["max_messages"] = 2  # two members: one round each
    data["moderator"]["max_rounds"] = 5
    est = estimate_plan(compile_text("research.yaml", data), at=AT)
    assert est.calls == (6 + 1 + 1, 6 + 1 + 1)
    assert any("max_messages (2)" in note for note in est.notes)


def test_cadence_and_max_rounds() -> None:
    data = example("research.yaml")
    del data["moderator"]["max_messages"]
    data["moderator"].update(max_rounds=6, cadence=2, rounds_per_phase=3)
    est = estimate_plan(compile_text("research.yaml", data), at=AT)
    # low: the moderator first speaks after round 2 and concludes; high: 6 rounds, a moderator turn every 2
    assert est.calls == (6 * 2 + 1 + 1, 6 * 6 + 3 + 1)


def test_consensus_rounds() -> None:
    data = example("consensus.yaml")
    agents, max_rounds = len(data["agents"]), data["consensus"]["max_rounds"]
    est = estimate_plan(load("consensus.yaml"), at=AT)
    assert est.calls == (agents, agents * max_rounds) == (3, 9)
    round2 = next(s for s in est.steps if s.step == "planner.r2")
    round1 = next(s for s in est.steps if s.step == "planner.r1")
    assert round2.calls == (0, 1)  # only the high end runs a second round
    assert round2.input_tokens[1] > round1.input_tokens[1]  # it sees the others' answers


def test_review_mapreduce_cascade_orgchart_breakout() -> None:
    review = example("review.yaml")
    people = len(review["agents"])
    assert estimate_plan(load("review.yaml"), at=AT).calls == (people, people * review["review"]["max_rounds"])
    items = len(example("mapreduce.yaml")["inputs"]["changes"])
    assert estimate_plan(load("mapreduce.yaml"), at=AT).calls == (items + 1, items + 1)
    cascade = estimate_plan(load("cascade.yaml"), at=AT)
    assert cascade.calls == (1, len(example("cascade.yaml")["agents"]))
    org = example("orgchart.yaml")
    engineers = org["roles"]["engineer"]["instances"]
    # assign, the engineers' tasks, the review, one escalation to the director at most, the aggregate
    assert estimate_plan(load("orgchart.yaml"), at=AT).calls == (engineers["min"] + 3, engineers["max"] + 4)
    child = example("consensus.yaml")
    breakout = estimate_plan(load("breakout.yaml"), at=AT)
    low, high = len(child["agents"]), len(child["agents"]) * child["consensus"]["max_rounds"]
    assert breakout.calls == (2 + low, 2 + high)
    assert {"scope", "plan", "estimate/planner", "estimate/dba", "estimate/sre"} <= {s.role for s in breakout.steps}


def test_map_over_an_upstream_list_is_bounded_by_max_items() -> None:
    data = example("mapreduce.yaml")
    data["agents"]["lister"] = {"prompt": "List the changes: {{input.changes}}"}
    data["map"].update(over="steps.lister.output.items", max_items=40)
    est = estimate_plan(compile_text("mapreduce.yaml", data), at=AT)
    assert est.calls == (1 + 1 + 1, 1 + 40 + 1)  # the lister, the mapped items, the reduce
    assert any("1 to 40 items" in note for note in est.notes)


def test_every_example_estimates() -> None:
    for path in sorted([*EXAMPLES.glob("*.yaml"), EXAMPLES / "parallel-coding" / "tasks.yaml"]):
        est = estimate_plan(load_pattern(path, models=model_choice([SONNET], (None, ""))), at=AT)
        assert est.calls[0] <= est.calls[1], path
        assert est.input_tokens[0] <= est.input_tokens[1], path
        low, high = known(est)
        assert low <= high, path
        json.dumps(est.as_dict())
    tasks = estimate_plan(load_pattern(EXAMPLES / "parallel-coding" / "tasks.yaml"), at=AT)
    assert tasks.calls == (0, 0) and tasks.agents == 0  # command agents call no model
    assert tasks.cost_usd == (0.0, 0.0)


# Prices


def test_scripted_model_costs_nothing_and_is_offline() -> None:
    est = estimate_plan(load("fanout.yaml", model=None), at=AT)
    assert est.calls == (3, 3)
    assert est.cost_usd == (0.0, 0.0)
    assert len(est.offline) == 1 and est.offline[0].startswith("scripted:")
    assert est.models[0].price == "offline"
    assert any(line.startswith("  offline: scripted:") for line in est.lines())
    assert est.budget() == (math.ceil(3 * (est.input_tokens[1] + est.output_tokens[1])), None)


def test_unknown_model_has_no_price_and_is_listed() -> None:
    est = estimate_plan(load("fanout.yaml", model="anthropic:claude-nonexistent-9"), at=AT)
    assert est.calls == (3, 3)
    assert est.cost_usd == (None, None)
    assert est.unknown_price == ("anthropic:claude-nonexistent-9",)
    assert est.models[0].price == "unknown" and est.models[0].cost_usd == (None, None)
    assert "cost unknown" in est.lines()[0]
    assert any("unknown price: anthropic:claude-nonexistent-9" in line for line in est.lines())
    assert est.budget()[1] is None and est.budget()[0] is not None


def test_self_hosted_model_has_no_price() -> None:
    spec = AgentSpec(kind="llm", model="openai:gpt-4.1-mini", base_url="http://localhost:8000/v1")
    plan = Plan(name="p", steps=(Step(id="a", kind="agent", agent=spec, prompt="hi"), llm("b")))
    est = estimate_plan(plan, at=AT)
    assert est.unknown_price == ("openai:gpt-4.1-mini (http://localhost:8000/v1)",)
    b = next(s for s in est.steps if s.step == "b")
    assert known(est)[1] == pytest.approx(sonnet_price(b.input_tokens[1], b.output_tokens[1]))


def test_cost_is_genai_prices_for_the_same_tokens() -> None:
    plan = Plan(name="one", steps=(llm("ask", prompt="Summarise the design of a cache. " * 20),))
    est = estimate_plan(plan, at=AT)
    assert est.calls == (1, 1)
    low, high = known(est)
    assert low == pytest.approx(sonnet_price(est.input_tokens[0], est.output_tokens[0]), rel=1e-9)
    assert high == pytest.approx(sonnet_price(est.input_tokens[1], est.output_tokens[1]), rel=1e-9)
    assert 0 < low < high


def test_fanout_cost_is_the_sum_of_its_calls_prices() -> None:
    est = estimate_plan(load("fanout.yaml"), at=AT)
    low = sum(s.calls[0] * sonnet_price(s.input_tokens[0], s.output_tokens[0]) for s in est.steps)
    high = sum(s.calls[1] * sonnet_price(s.input_tokens[1], s.output_tokens[1]) for s in est.steps)
    assert est.cost_usd == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert known(est)[1] > known(est)[0] > 0


def test_calls_are_priced_one_by_one() -> None:
    """A long-context tier applies to one call's own input, not to a run's total."""
    prompt = "x" * 4 * 60_000  # ~60k tokens a call: x2 at the high end is 120k, under a 200k tier
    plan = Plan(name="wide", steps=tuple(llm(f"a{i}", prompt=prompt) for i in range(4)))
    est = estimate_plan(plan, at=AT)
    per_call = est.steps[0]
    assert known(est)[1] == pytest.approx(4 * sonnet_price(per_call.input_tokens[1], per_call.output_tokens[1]))
    assert est.input_tokens[1] > 200_000  # summed, the run is past any tier a single call is under


def test_other_providers_are_priced() -> None:
    for model, provider, name in [
        ("openai:gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        ("google-gla:gemini-2.5-flash", "google", "gemini-2.5-flash"),
    ]:
        est = estimate_plan(Plan(name="p", steps=(llm("a", model=model, prompt="hello"),)), at=AT)
        usage = Usage(input_tokens=est.input_tokens[1], output_tokens=est.output_tokens[1])
        expected = calc_price(usage, name, provider_id=provider, genai_request_timestamp=AT).total_price
        assert known(est)[1] == pytest.approx(float(expected)), model


def test_budget_is_a_multiple_of_the_high_end() -> None:
    est = estimate_plan(load("research.yaml"), at=AT)
    tokens, cost = est.budget()
    assert tokens == math.ceil(3 * (est.input_tokens[1] + est.output_tokens[1]))
    assert cost == pytest.approx(3 * known(est)[1])
    tokens2, cost2 = est.budget(2.0)
    assert tokens2 == math.ceil(2 * (est.input_tokens[1] + est.output_tokens[1]))
    assert cost2 == pytest.approx(2 * known(est)[1])
    with pytest.raises(ValueError, match="positive"):
        est.budget(0)


def test_two_estimates_add_up() -> None:
    fanout, research = estimate_plan(load("fanout.yaml"), at=AT), estimate_plan(load("research.yaml"), at=AT)
    both = fanout + research
    assert both.calls == (fanout.calls[0] + research.calls[0], fanout.calls[1] + research.calls[1])
    assert both.agents == fanout.agents + research.agents
    assert both.input_tokens[1] == fanout.input_tokens[1] + research.input_tokens[1]
    assert known(both) == (
        pytest.approx(known(fanout)[0] + known(research)[0]),
        pytest.approx(known(fanout)[1] + known(research)[1]),
    )
    assert [m.model for m in both.models] == [SONNET]
    assert both.models[0].calls == both.calls
    unknown = estimate_plan(load("fanout.yaml", model="anthropic:claude-nonexistent-9"), at=AT)
    mixed = research + unknown
    assert known(mixed) == known(research)  # the known part
    assert mixed.unknown_price == ("anthropic:claude-nonexistent-9",)
    assert len(mixed.lines()) > len(research.lines())


# Agent kinds


def test_cli_agents_count_but_are_priced_by_the_tool() -> None:
    cli = Step(id="implement", kind="agent", agent=AgentSpec(kind="cli", preset="claude"), prompt="do it")
    tool = Step(id="fmt", kind="agent", agent=AgentSpec(kind="command", command="ruff format"), after=("implement",))
    plan = Plan(
        name="p", steps=(llm("spec", prompt="write the spec"), cli.model_copy(update={"after": ("spec",)}), tool)
    )
    est = estimate_plan(plan, at=AT)
    assert est.agents == 2  # the llm and the cli agent; the command calls no model
    assert est.calls == (1, 1)
    assert est.tools == ("implement (claude)",)
    assert any("priced by the tool: implement (claude)" in line for line in est.lines())
    assert est.budget() == (None, None)  # the run counts what the CLI reports: no bound from here


def test_coder_makes_a_tool_loop_of_calls() -> None:
    coder = AgentSpec(kind="coder", model=SONNET)
    two = AgentSpec(kind="coder", model=SONNET, settings={"max_iterations": 2})
    plan = Plan(
        name="p",
        steps=(
            Step(id="a", kind="agent", agent=coder, prompt="fix"),
            Step(id="b", kind="agent", agent=two, prompt="fix"),
        ),
    )
    est = estimate_plan(plan, at=AT)
    per = CODER_REQUESTS_PER_ITERATION
    assert est.calls == (2 * per, per * CODER_ITERATIONS + per * 2)


def test_confidence_retries_widen_the_high_end() -> None:
    step = llm("judge", prompt="judge", confidence=ConfidencePolicy(retry_below=0.6), retry=RetryPolicy(max_attempts=4))
    assert estimate_plan(Plan(name="p", steps=(step,)), at=AT).calls == (1, 4)


def test_python_and_command_cost_nothing() -> None:
    steps = (
        Step(id="a", kind="agent", agent=AgentSpec(kind="python", ref="m:f")),
        Step(id="b", kind="agent", agent=AgentSpec(kind="command", command="true"), after=("a",)),
    )
    est = estimate_plan(Plan(name="p", steps=steps), at=AT)
    assert (est.agents, est.calls, est.cost_usd, est.budget()) == (0, (0, 0), (0.0, 0.0), (None, None))


# Output


def test_lines_and_dict() -> None:
    est = estimate_plan(load("research.yaml"), at=AT)
    head = est.lines()[0]
    assert head.startswith("research: 8 agents, 8–15 model calls, ~")
    assert head.endswith(f"({SONNET})")
    assert "$" in head
    data = est.as_dict()
    assert json.loads(json.dumps(data))["calls"] == [8, 15]
    assert data["models"][0]["model"] == SONNET
    assert len(data["steps"]) == len(est.steps)
    assert isinstance(est, Estimate)


def test_the_module_is_pure() -> None:
    """No model library, no engine; genai-prices only once something is priced (CLI start-up)."""
    code = (
        "import sys, parallax.estimate as e; "
        "bad = [m for m in sys.modules if m.startswith(('pydantic_ai', 'parallax.engine', 'genai_prices'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
