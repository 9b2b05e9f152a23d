"""`parallax research "QUESTION"` end to end through the real CLI: offline on the built-in method,
the designer's method on a scripted model, flags that fix the design, `--plan-only` YAML that
`parallax run` takes unchanged, and an estimate that stops a paid run nobody confirmed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from parallax.research import METHODS, builtin_design, choose_method, to_pattern, with_flags
from tests.cli.test_config import parallax, project_with

QUESTION = "Should a 40-person startup move its monolith to microservices this year?"


def test_the_method_follows_the_question_and_the_flags_fix_it() -> None:
    assert choose_method(QUESTION) == "debate"
    assert choose_method("How many users will we have in 2027?") == "delphi"
    assert choose_method("Where could an attacker break our login flow?") == "redteam"
    assert choose_method("What matters most when choosing a CI system?") == "panel"
    design = builtin_design("What matters most when choosing a CI system?")
    assert [c.name for c in design.cohorts] == ["evidence", "risks", "costs"]
    fixed = with_flags(design, method="delphi", cohorts=4, agents_per_cohort=1, max_rounds=3)
    assert fixed.method == "delphi" and [p.name for p in fixed.phases] == ["estimate", "revise"]
    assert len(fixed.cohorts) == 4 and {c.agents for c in fixed.cohorts} == {1} and fixed.max_rounds == 3
    pattern = to_pattern(QUESTION, fixed, members=["llm", "claude"])
    kinds = [spec.get("preset", "llm") for c in pattern["cohorts"].values() for spec in c["agents"].values()]
    assert kinds == ["llm", "claude", "llm", "claude"]  # members cycle over the kinds asked for


def test_offline_research_runs_the_built_in_method_and_says_so(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    result = parallax(project, "research", QUESTION, "-q", "--run-id", "asked", "-o", "answer.md")
    assert result.returncode == 0, result.stderr
    assert "offline: no model is configured" in result.stdout
    assert "Synthesis" in result.stdout and "Offline run, no model configured: this shows the debate method" in (
        result.stdout
    )
    assert "final position" in result.stdout and "\n  for\n" in result.stdout and "\n  against\n" in result.stdout
    report = (project / "answer.md").read_text()
    assert report.startswith("# asked\n") and "## Synthesis" in report
    listed = parallax(project, "runs")
    assert "asked\tsucceeded\tresearch" in listed.stdout


def test_plan_only_prints_a_pattern_parallax_run_takes_unchanged(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    args = ["--method", "delphi", "--cohorts", "4", "--agents-per-cohort", "1", "--max-rounds", "2", "--plan-only"]
    planned = parallax(project, "research", "How many users will we have in 2027?", *args)
    assert planned.returncode == 0, planned.stderr
    pattern = yaml.safe_load(planned.stdout)
    assert pattern["pattern"] == "cohorts" and len(pattern["cohorts"]) == 4
    assert all(len(c["agents"]) == 1 for c in pattern["cohorts"].values())
    assert pattern["moderator"]["max_rounds"] == 2
    assert [p["name"] for p in pattern["moderator"]["phases"]] == ["estimate", "revise"]
    (project / "research.yaml").write_text(planned.stdout)
    ran = parallax(project, "run", "research.yaml", "-q", "--run-id", "replayed")
    assert ran.returncode == 0, ran.stderr
    assert "replayed succeeded" in ran.stdout and "Synthesis" in ran.stdout


def test_the_designer_designs_the_method_on_the_chosen_model(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    design = {
        "method": "panel",
        "rationale": "two lenses are enough for a build-or-buy question",
        "cohorts": [{"name": "builders", "lens": "what we can build", "agents": 1},
                    {"name": "buyers", "lens": "what we can buy", "agents": 1}],
        "phases": [{"name": "positions", "prompt": "State your position."}],
        "rounds_per_phase": 1,
        "moderator": "Conclude after one round.",
        "synthesis": "Summary, agreements, disagreements, recommendation.",
    }  # fmt: skip
    turn = {"position": "Buy the hosted one.", "reasoning": "time to market", "confidence": 0.8, "stance": "buy"}
    answers = {
        "designer": [design],
        "builders-1": [{**turn, "position": "Buy it; build only the glue.", "stance": "buy"}],
        "buyers-1": [turn],
        "moderator": [{"reasoning": "stable", "actions": [{"action": "conclude"}]}],
        "synthesis": [{"summary": "Buy the hosted search, build the glue.", "recommendation": "Buy.",
                       "agreements": ["buy"], "disagreements": [], "confidence": 0.8}],
    }  # fmt: skip
    (project / "answers.json").write_text(json.dumps(answers))
    result = parallax(project, "research", "Build or buy our search?", "-q", "--model", "scripted:answers.json")
    assert result.returncode == 0, result.stderr
    assert "method: panel, 2 cohorts (builders, buyers)" in result.stdout
    assert "Buy the hosted search, build the glue." in result.stdout
    assert "2 of 2 pairs" not in result.stdout and "1 of 1 pairs of cohorts agree" in result.stdout


def test_a_paid_run_nobody_confirmed_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    (project / "open.yaml").write_text(
        'pattern: fanout\nname: paid\ninputs: {brief: "a cache"}\nagents:\n  reviewer: {prompt: "{{input.brief}}"}\n'
    )
    paid = ["--model", "anthropic:claude-sonnet-4-5"]
    estimated = parallax(project, "run", "open.yaml", *paid, "--estimate")
    assert estimated.returncode == 0, estimated.stderr
    assert "1 agent" in estimated.stdout and "$" in estimated.stdout
    refused = parallax(project, "run", "open.yaml", *paid)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: this run calls paid models")
    assert "$" in refused.stdout  # the estimate was shown first
    listed = parallax(project, "runs")
    assert listed.stdout.strip() == ""  # nothing was written
    research = parallax(project, "research", QUESTION, *paid)
    assert research.returncode == 2 and "this run calls paid models" in research.stderr


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_offline_and_its_plan_is_the_one_plan_only_prints(tmp_path: Path, method: str) -> None:
    project = project_with(tmp_path, "")
    planned = parallax(project, "research", QUESTION, "--method", method, "--plan-only")
    assert planned.returncode == 0, planned.stderr
    (project / "research.yaml").write_text(planned.stdout)
    researched = parallax(project, "research", QUESTION, "--method", method, "--json")
    assert researched.returncode == 0, researched.stderr
    run = json.loads(researched.stdout)
    assert run["status"] == "succeeded"
    expected = {c.name for c in builtin_design(QUESTION, method=method).cohorts}  # type: ignore[arg-type]
    assert {s["cohort"] for s in run["steps"] if s["cohort"]} == expected
    assert run["steps"][-1]["id"] == "synthesis" and run["steps"][-1]["status"] == "succeeded"
    rerun = parallax(project, "run", "research.yaml", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["plan_hash"] == run["plan_hash"]  # the same plan, from the YAML alone
