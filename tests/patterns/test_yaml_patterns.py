"""YAML patterns: compiled deterministically, run offline, and every malformed one refused with
one clear, located error (exit code 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from parallax.cli import cli
from parallax.core.errors import PlanError
from parallax.patterns.load import load_target
from parallax.patterns.schema import PATTERN_SCHEMA
from parallax.patterns.yaml_loader import compile_pattern

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MALFORMED = sorted((HERE / "malformed").glob("*.yaml"))


def test_the_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(PATTERN_SCHEMA)
    result = CliRunner().invoke(cli, ["schema"])
    assert json.loads(result.output)["title"] == "Parallax pattern"


def test_same_yaml_same_plan_and_hash() -> None:
    path = ROOT / "examples" / "fanout.yaml"
    one, two = load_target(str(path)), load_target(str(path))
    assert one.content_hash() == two.content_hash()
    assert [s.id for s in one.steps] == ["performance", "correctness", "operations", "merge"]
    assert one.step("performance").output == "types:Review"


def test_inline_types_validate_contributions(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", f"sqlite://{tmp_path / 'y.db'}", "run", str(ROOT / "examples" / "fanout.yaml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["status"] == "succeeded"
    assert sorted(c["path"] for c in state["conflicts"]) == ["ttl_seconds", "verdict"]


def test_pipeline_orders_agents_and_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "pattern: pipeline\nname: p\nmodel: test\nenv_expand: [TOPIC]\n"
        "agents:\n  draft: {prompt: '${TOPIC}'}\n  edit: {}\n  publish: {}\n"
    )
    plan = compile_pattern(text, "p.yaml", environ={"TOPIC": "caching"})
    assert [s.after for s in plan.steps] == [(), ("draft",), ("edit",)]
    assert plan.step("draft").prompt == "caching"
    with pytest.raises(PlanError, match=r"^p.yaml:5:\d+: agents.draft.prompt: \$\{TOPIC\} is not listed in env_expand"):
        compile_pattern(text.replace("env_expand: [TOPIC]\n", ""), "p.yaml", environ={"TOPIC": "caching"})


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed_patterns_give_one_located_error(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(PlanError) as info:
        load_target(str(path))
    message = str(info.value)
    assert expect in message, message
    assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: ", message), f"no file:line:col in {message!r}"
    result = CliRunner().invoke(cli, ["compile", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


@pytest.mark.parametrize("name", ["GIT_AUTHOR_NAME", "PATH", "PWD", "BASE_URL", "TOPIC"])
def test_harmless_names_listed_in_env_expand_are_filled(name: str) -> None:
    text = f"pattern: fanout\nname: p\nmodel: test\nenv_expand: [{name}]\nagents:\n  a: {{prompt: '${{{name}}}'}}\n"
    assert compile_pattern(text, "p.yaml", environ={name: "plain"}).step("a").prompt == "plain"


def test_aliases_within_the_node_budget_still_work() -> None:
    """The YAML limits (tests/security/test_inputs.py) do not ban anchors: a shared block compiles."""
    text = "pattern: fanout\nname: shared\nmodel: test\nagents:\n  a: &agent {prompt: hi, timeout_s: 30}\n  b: *agent\n"
    plan = compile_pattern(text, "shared.yaml")
    assert plan.step("a").timeout_s == plan.step("b").timeout_s == 30


def test_errors_point_at_the_right_line() -> None:
    text = "pattern: fanout\nname: x\nmodel: test\nagents:\n  a:\n    prompt: hi\n    output: Nope\n"
    with pytest.raises(PlanError, match=r"^p.yaml:7:\d+: agents.a.output: unknown type 'Nope'"):
        compile_pattern(text, "p.yaml")


def test_corpus_is_large_enough() -> None:
    assert len(MALFORMED) >= 25


def test_confidence_policy_in_yaml() -> None:
    text = (
        "pattern: fanout\nname: c\nmodel: test\nagents:\n  a:\n    confidence:\n"
        "      retry_below: 0.5\n      escalate_below: 0.4\n      escalate_model: anthropic:claude-opus-4-1\n"
    )
    policy = compile_pattern(text, "c.yaml").step("a").confidence
    assert policy is not None and policy.escalate_model == "anthropic:claude-opus-4-1"
    with pytest.raises(PlanError, match=r"c.yaml:\d+:\d+: agents.a.confidence: 'escalate_model' is a dependency"):
        compile_pattern(text.replace("      escalate_model: anthropic:claude-opus-4-1\n", ""), "c.yaml")


def test_vote_example_runs_offline(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", f"sqlite://{tmp_path / 'v.db'}", "run", str(ROOT / "examples" / "vote.yaml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout.strip().splitlines()[-1])
    document = state["result"]["document"]
    assert document["winner"] == "N+1 queries in the new cart code"
    assert document["agreement"] == round(2.1 / 3.4, 4)  # weighted by each agent's confidence
    assert [c["kind"] for c in state["conflicts"]] == ["disagreement"]


def test_vote_pattern_needs_a_vote_section() -> None:
    text = "pattern: vote\nname: v\nmodel: test\nagents:\n  a: {}\n"
    with pytest.raises(PlanError, match="a vote pattern needs `vote:"):
        compile_pattern(text, "v.yaml")


def test_model_defaults_per_pattern_role_and_agent() -> None:
    text = (
        "pattern: fanout\nname: r\nmodel: openai:gpt-5-mini\n"
        "roles:\n  critic:\n    model: anthropic:claude-sonnet-4-5\n    instructions: be harsh\n"
        "    confidence: {accept: 0.6}\n"
        "agents:\n  plain: {}\n  critic1: {role: critic}\n  critic2: {role: critic, model: openai:gpt-5}\n"
    )
    plan = compile_pattern(text, "r.yaml")
    models = {s.id: s.agent.model for s in plan.steps if s.agent}
    assert models == {"plain": "openai:gpt-5-mini", "critic1": "anthropic:claude-sonnet-4-5", "critic2": "openai:gpt-5"}
    critic = plan.step("critic1")
    assert critic.agent is not None and critic.agent.instructions == "be harsh"
    assert critic.confidence is not None and critic.confidence.accept == 0.6
    assert plan.step("plain").confidence is None


@pytest.mark.parametrize(
    "name", ["review", "consensus", "cascade", "mapreduce", "research", "orgchart", "breakout", "approval"]
)
def test_every_builtin_example_compiles_to_the_same_hash(name: str) -> None:
    path = ROOT / "examples" / f"{name}.yaml"
    assert load_target(str(path)).content_hash() == load_target(str(path)).content_hash()
    compiled = CliRunner().invoke(cli, ["compile", str(path)])
    assert compiled.exit_code == 0, compiled.output
