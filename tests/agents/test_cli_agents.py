"""cli agents against stand-in executables (test doubles on PATH named claude, codex, ...) that
print what the real tools print in their non-interactive JSON modes."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parallax.core.plan import AgentSpec, Plan, RetryPolicy, Step
from parallax.engine import api
from parallax.engine.runner import RunOptions
from parallax.streams.sqlite import SqliteStore

FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_ARGV_FILE"], "w") as f:
    json.dump(sys.argv, f)
sys.stdout.write(open(os.environ["FAKE_OUTPUT_FILE"]).read())
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "cli.db") as store:
        yield store


def install_fake(tmp_path: Path, name: str, lines: list[Any], exit_code: int = 0) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    output = tmp_path / f"{name}.out"
    output.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_ARGV_FILE": str(tmp_path / f"{name}.argv"),
        "FAKE_OUTPUT_FILE": str(output),
        "FAKE_EXIT": str(exit_code),
    }


async def run_cli(
    store: SqliteStore,
    env: dict[str, str],
    preset: str,
    output: str | None = None,
    prompt: str = "Fix the bug",
    spec_model: str | None = None,
    **settings: Any,
):  # type: ignore[no-untyped-def]
    agent = AgentSpec(
        kind="cli", preset=preset, env=("FAKE_ARGV_FILE", "FAKE_OUTPUT_FILE", "FAKE_EXIT"), settings=settings,
        model=spec_model,
    )  # fmt: skip
    plan = Plan(
        name="cli",
        steps=(
            Step(
                id="code",
                kind="agent",
                agent=agent,
                prompt=prompt,
                output=output,
                retry=RetryPolicy(max_attempts=1),
            ),
        ),
    )
    return await api.run_plan(store, plan, options=RunOptions(parent_env={**os.environ, **env}))


async def test_claude_stream_json(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "claude",
        [
            {"type": "system", "subtype": "init", "session_id": "s1", "model": "sonnet"},
            {"type": "assistant", "message": {"content": [{"type": "text", "text": "Looking at the bug."}]}},
            {
                "type": "assistant",
                "message": {"content": [{"type": "tool_use", "name": "Edit", "input": {"file": "a.py"}}]},
            },
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "result": "Fixed it.",
                "total_cost_usd": 0.0123,
                "num_turns": 2,
                "usage": {"input_tokens": 1000, "output_tokens": 200},
            },
        ],
    )
    state = await run_cli(store, env, "claude", model="sonnet")
    assert state.status == "succeeded", state.steps["code"].error
    assert state.result == "Fixed it."
    assert state.steps["code"].usage.cost_usd == pytest.approx(0.0123)
    argv = json.loads((tmp_path / "claude.argv").read_text())[1:]
    assert argv == ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
                    "acceptEdits", "--model", "sonnet", "--", "Fix the bug"]  # fmt: skip


async def test_claude_is_error_fails_even_with_exit_0(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "claude",
        [{"type": "result", "subtype": "success", "is_error": True, "result": "Not logged in · Please run /login"}],
    )
    state = await run_cli(store, env, "claude")
    assert state.steps["code"].status == "failed"
    assert "Not logged in" in (state.steps["code"].error or "")


async def test_codex_jsonl_and_typed_output(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "codex",
        [
            {"type": "thread.started", "thread_id": "t"},
            {"type": "item.completed", "item": {"id": "1", "type": "command_execution", "command": "pytest"}},
            {"type": "item.completed", "item": {"id": "2", "type": "agent_message",
                                                "text": 'Done.\n```json\n{"answer": "patched", "confidence": 0.8}\n```'}},
            {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 5}},
        ],
    )  # fmt: skip
    state = await run_cli(store, env, "codex", output="tests.engine.agents:Scored", model="gpt-5-codex")
    assert state.status == "succeeded", state.steps["code"].error
    assert state.result == {"answer": "patched", "confidence": 0.8}
    argv = json.loads((tmp_path / "codex.argv").read_text())[1:]
    assert argv == ["exec", "--json", "-s", "workspace-write", "--skip-git-repo-check", "-m", "gpt-5-codex", "--",
                    "Fix the bug"]  # fmt: skip


async def test_gemini_joins_assistant_messages(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "gemini",
        [
            {"type": "init", "session_id": "g", "model": "gemini-2.5-pro"},
            {"type": "message", "role": "user", "content": "Fix the bug"},
            {"type": "message", "role": "assistant", "content": "Fixed ", "delta": True},
            {"type": "message", "role": "assistant", "content": "the bug.", "delta": True},
            {"type": "result", "status": "success", "stats": {}},
        ],
    )
    state = await run_cli(store, env, "gemini")
    assert state.result == "Fixed the bug."


async def test_opencode_text_events(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "opencode",
        [
            {"type": "step_start", "timestamp": 1, "sessionID": "s", "part": {}},
            {"type": "text", "timestamp": 2, "sessionID": "s", "part": {"type": "text", "text": "All done."}},
            {"type": "step_finish", "timestamp": 3, "sessionID": "s",
             "part": {"reason": "stop", "cost": 0.001, "tokens": {"input": 7, "output": 3}}},
        ],
    )  # fmt: skip
    state = await run_cli(store, env, "opencode", model="anthropic/claude-sonnet-4-5")
    assert state.result == "All done."
    assert state.steps["code"].usage.input_tokens == 7


async def test_aider_auth_error_with_exit_0_is_a_failure(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "aider",
        ["Aider v0.86.2", "litellm.AuthenticationError: Missing Anthropic API Key",
         "The API provider is not able to authenticate you. Check your API key."],
    )  # fmt: skip
    state = await run_cli(store, env, "aider")
    assert state.steps["code"].status == "failed"
    assert "AuthenticationError" in (state.steps["code"].error or "")
    argv = json.loads((tmp_path / "aider.argv").read_text())[1:]
    assert argv[-2:] == ["--model", "sonnet"], "aider always gets a model, or it waits for a browser login"


async def test_a_missing_cli_is_a_clear_error(store: SqliteStore, tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path / "empty")}
    state = await run_cli(store, env, "claude")
    assert "claude is not installed or not on PATH" in (state.steps["code"].error or "")


async def test_unknown_preset_is_refused(store: SqliteStore, tmp_path: Path) -> None:
    state = await run_cli(store, {}, "cursor")
    assert "unknown cli preset 'cursor'" in (state.steps["code"].error or "")


async def test_command_template(store: SqliteStore, tmp_path: Path) -> None:
    agent = AgentSpec(kind="cli", command="printf '%s' {{prompt}} | tr a-z A-Z")
    plan = Plan(name="t", steps=(Step(id="t", kind="agent", agent=agent, prompt="it's fixed; rm -rf /"),))
    state = await api.run_plan(store, plan)
    assert state.result == "IT'S FIXED; RM -RF /", "the prompt is shell-quoted, never executed"


@pytest.mark.parametrize(
    ("preset", "expected_tail"),
    [
        ("claude", ["--model", "opus", "--", "- fix the bug\n- add a test"]),
        ("codex", ["-m", "opus", "--", "- fix the bug\n- add a test"]),
        ("opencode", ["-m", "opus", "--", "- fix the bug\n- add a test"]),
        ("gemini", ["--prompt=- fix the bug\n- add a test", "-m", "opus"]),
        ("aider", ["--message=- fix the bug\n- add a test", "--model", "opus"]),
    ],
)
async def test_a_prompt_starting_with_a_dash_is_never_an_option_and_model_reaches_the_flag(
    store: SqliteStore, tmp_path: Path, preset: str, expected_tail: list[str]
) -> None:
    # A YAML block prompt that begins with a markdown bullet; `model:` on the agent (not only
    # settings.model) goes to the preset's model flag.
    env = install_fake(tmp_path, preset, ["done"])
    await run_cli(store, env, preset, prompt="- fix the bug\n- add a test", spec_model="opus")
    argv = json.loads((tmp_path / f"{preset}.argv").read_text())[1:]
    assert argv[-len(expected_tail) :] == expected_tail
    assert argv.count("- fix the bug\n- add a test") + sum("=- fix the bug" in a for a in argv) == 1


def test_model_on_a_cli_agent_without_a_model_flag_is_a_located_error() -> None:
    from parallax.core.errors import PlanError
    from parallax.patterns.yaml_loader import compile_pattern

    text = "pattern: fanout\nname: m\nagents:\n  a:\n    kind: cli\n    command: 'echo {{prompt}}'\n    model: opus\n"
    with pytest.raises(PlanError, match=r"<pattern>:7:\d+: agents.a.model: .*has no model flag"):
        compile_pattern(text)
    pinned = compile_pattern(text.replace("    command: 'echo {{prompt}}'\n", "    preset: claude\n"))
    assert pinned.steps[0].agent is not None and pinned.steps[0].agent.model == "opus"


async def test_aider_fails_on_its_last_provider_error_and_keeps_the_whole_message(
    store: SqliteStore, tmp_path: Path
) -> None:
    # What aider 0.86 prints for a 400 from its model: the error over wrapped lines, no retry
    # after it, exit 0.
    env = install_fake(
        tmp_path,
        "aider",
        ["Aider v0.86.2", "Main model: openai/gpt-4.1 with diff edit format",
         "litellm.BadRequestError: OpenAIException - Invalid schema for function",
         "'final_result': In context=(), 'additionalProperties' is required",
         "to be supplied and to be false.", "", "Tokens: 1.2k sent, 0 received."],
    )  # fmt: skip
    state = await run_cli(store, env, "aider")
    error = state.steps["code"].error or ""
    assert state.steps["code"].status == "failed"
    assert error.endswith(
        "litellm.BadRequestError: OpenAIException - Invalid schema for function 'final_result': In context=(), "
        "'additionalProperties' is required to be supplied and to be false."
    )


async def test_aider_recovering_after_a_retry_is_a_success(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "aider",
        ["litellm.APIConnectionError: Connection refused", "Retrying in 0.2 seconds...",
         "Tokens: 1.2k sent, 312 received. Cost: $0.0041 message, $0.0041 session.",
         "Applied edit to app.py", "Tokens: 2.5k sent, 40 received.", "Done."],
    )  # fmt: skip
    state = await run_cli(store, env, "aider")
    assert state.steps["code"].status == "succeeded", state.steps["code"].error
    usage = state.steps["code"].usage  # aider's own "Tokens:" lines, one per request
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 3700, 352)


async def test_codex_stream_error_event_is_a_failure(store: SqliteStore, tmp_path: Path) -> None:
    env = install_fake(
        tmp_path,
        "codex",
        [{"type": "thread.started", "thread_id": "t"},
         {"type": "error", "message": "stream disconnected before completion: 400 Bad Request: model not found"}],
    )  # fmt: skip
    state = await run_cli(store, env, "codex")
    assert state.steps["code"].status == "failed"
    assert "400 Bad Request: model not found" in (state.steps["code"].error or "")


async def test_opencode_error_by_reference_brings_its_log_line(store: SqliteStore, tmp_path: Path) -> None:
    # opencode's error event names a ref; with --print-logs its log line with that ref (the cause)
    # is on stderr. The stand-in prints what opencode 1.18 prints for an unknown model.
    env = install_fake(
        tmp_path,
        "opencode",
        [{"type": "text", "part": {"text": "The conversation was compacted.", "synthetic": True}},
         {"type": "error", "error": {"name": "UnknownError", "data": {
             "message": "Unexpected server error. Check server logs for details.", "ref": "err_42"}}}],
    )  # fmt: skip
    fake = Path(env["PATH"].split(":")[0]) / "opencode"
    fake.write_text(
        fake.read_text().replace(
            "sys.stdout.write(",
            "sys.stderr.write('level=ERROR ref=err_42 error=\"ProviderModelNotFoundError: Model not found\"\\n')\n"
            "sys.stdout.write(",
        )
    )
    state = await run_cli(store, env, "opencode")
    error = state.steps["code"].error or ""
    assert state.steps["code"].status == "failed"
    assert "UnknownError: Unexpected server error" in error and "(ref err_42)" in error
    assert "ProviderModelNotFoundError: Model not found" in error
    argv = json.loads((tmp_path / "opencode.argv").read_text())[1:]
    assert argv[argv.index("--") - 3 : argv.index("--")] == ["--print-logs", "--log-level", "ERROR"]
