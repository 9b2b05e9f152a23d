"""A model chosen once (parallax/model_choice.py): `--model` on run/compile/resume/fork, then
the pattern's `model:`, then PARALLAX_MODEL / parallax.toml, then a provider's default; per-role
overrides; `parallax config show TARGET` says which model each agent uses and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallax.core import events as ev
from parallax.core.errors import UserError
from parallax.engine import api
from parallax.engine.control import control_stream, read_events
from parallax.engine.runner import Runner, RunOptions
from parallax.model_choice import NO_MODEL, ModelChoice, model_choice, parse_model_flags
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore
from tests.cli.test_config import parallax, project_with

OPEN = """\
pattern: fanout
name: open
inputs: {brief: "a cache"}
agents:
  reviewer: {prompt: "Review {{input.brief}}"}
  pinned: {prompt: "Review {{input.brief}}", model: "openai:gpt-4.1"}
"""


def models_of(plan_json: str) -> dict[str, str]:
    plan = json.loads(plan_json)
    return {s["id"]: s["agent"]["model"] for s in plan["steps"] if (s.get("agent") or {}).get("kind") == "llm"}


def test_the_order_of_the_choice() -> None:
    choice = ModelChoice("flag:m", {"critic": "role:m"}, "configured:m", "PARALLAX_MODEL")
    assert choice.choose(["critic"], "own:m", "pattern:m") == ("role:m", "--model critic=…")
    assert choice.choose(["other"], "own:m", "pattern:m")[0] == "own:m"
    assert choice.choose(["other"], None, "pattern:m") == ("flag:m", "--model")
    without_flag = ModelChoice(None, {}, "configured:m", "PARALLAX_MODEL")
    assert without_flag.choose(["x"], None, "pattern:m")[0] == "pattern:m"
    assert without_flag.choose(["x"], None, None) == ("configured:m", "PARALLAX_MODEL")
    assert ModelChoice().choose(["x"], None, None) == (None, NO_MODEL)
    assert parse_model_flags(["openai:gpt-5", "critic=anthropic:claude-sonnet-4-5"]) == (
        "openai:gpt-5",
        {"critic": "anthropic:claude-sonnet-4-5"},
    )
    for bad in (["a", "b"], ["critic="], [" "]):
        with pytest.raises(UserError):
            parse_model_flags(bad)


def test_a_pattern_without_a_model_takes_the_flag_then_the_environment(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    (project / "open.yaml").write_text(OPEN)
    refused = parallax(project, "compile", "open.yaml", "--json")
    assert refused.returncode == 2
    assert (
        refused.stderr.count("\n") == 1
        and "agents.reviewer: an llm agent needs a model: give --model" in refused.stderr
    )
    from_env = parallax(
        project, "compile", "open.yaml", "--json", env={"PARALLAX_MODEL": "google-gla:gemini-2.5-flash"}
    )
    assert from_env.returncode == 0, from_env.stderr
    assert models_of(from_env.stdout) == {"reviewer": "google-gla:gemini-2.5-flash", "pinned": "openai:gpt-4.1"}
    flagged = parallax(
        project, "compile", "open.yaml", "--json", "--model", "anthropic:claude-sonnet-4-5",
        "--model", "pinned=openai:gpt-5", env={"PARALLAX_MODEL": "google-gla:gemini-2.5-flash"},
    )  # fmt: skip
    assert flagged.returncode == 0, flagged.stderr
    assert models_of(flagged.stdout) == {"reviewer": "anthropic:claude-sonnet-4-5", "pinned": "openai:gpt-5"}
    from_key = parallax(project, "compile", "open.yaml", "--json", env={"OPENAI_API_KEY": "sk-test"})
    assert models_of(from_key.stdout)["reviewer"] == "openai:gpt-4.1-mini"
    unknown = parallax(project, "compile", "open.yaml", "--model", "m:x", "--model", "critic=m:y")
    assert unknown.returncode == 2
    assert "--model critic=…: no llm or coder agent of open.yaml answers to 'critic' (known: pinned, reviewer)" in (
        unknown.stderr
    )


def test_config_show_says_which_model_each_agent_uses_and_why(tmp_path: Path) -> None:
    project = project_with(tmp_path, 'model = "openai:gpt-4.1-mini"\n')
    (project / "open.yaml").write_text(OPEN)
    result = parallax(project, "config", "show", "open.yaml", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: (row["value"], row["from"]) for row in json.loads(result.stdout)}
    assert rows["model.reviewer"] == ("openai:gpt-4.1-mini", f"{project / 'parallax.toml'}:1")
    assert rows["model.pinned"] == ("openai:gpt-4.1", "named by the agent (or its role)")


def test_the_pattern_model_yields_to_the_flag_but_an_agents_own_does_not() -> None:
    text = OPEN.replace("name: open\n", "name: open\nmodel: scripted:x.json\n")
    plan = compile_pattern(text, models=model_choice(["openai:gpt-5"], (None, "")))
    assert {s.id: s.agent.model for s in plan.steps if s.agent} == {
        "reviewer": "openai:gpt-5",
        "pinned": "openai:gpt-4.1",
    }
    plan = compile_pattern(text)
    assert plan.step("reviewer").agent.model == "scripted:x.json"  # type: ignore[union-attr]


async def test_resume_with_a_model_runs_the_steps_not_yet_run_on_it(tmp_path: Path) -> None:
    planned = tmp_path / "planned.json"
    chosen = tmp_path / "chosen.json"
    planned.write_text(json.dumps({"reviewer": ["from the planned model"]}))
    chosen.write_text(json.dumps({"reviewer": ["from the chosen model"]}))
    text = "pattern: fanout\nname: r\nagents:\n  reviewer: {prompt: hi}\n"
    plan = compile_pattern(text, models=model_choice([f"scripted:{planned}"], (None, "")))
    async with SqliteStore(tmp_path / "p.db") as store:
        run_id = await api.create_run(store, plan)
        options = RunOptions(models=model_choice([f"reviewer=scripted:{chosen}"], (None, "")))
        state = await Runner(store, run_id, options).run()
        events = await read_events(store, control_stream(run_id))
    assert state.status == "succeeded", state.steps["reviewer"].error
    assert state.steps["reviewer"].output == "from the chosen model"
    started = [e for e in events if e.type == ev.STEP_STARTED and e.step == "reviewer"]
    assert started[0].data["model"] == f"scripted:{chosen}"  # the log says which model ran
