"""The real Claude Code, opencode, codex, aider and gemini-cli programs, driven by `parallax run` on a
two-task graph in a real git repository, each against a scripted server of its provider's API
on loopback: Anthropic Messages (tests/agents/fake_anthropic.py) for Claude Code and opencode,
OpenAI Responses (tests/agents/fake_responses.py) for codex, OpenAI Chat Completions
(tests/agents/fake_chat.py) for aider, Gemini (tests/agents/fake_gemini.py) for gemini-cli.

Each program runs as the `cli` preset runs it, in the task's own worktree and HOME, with only
the variables the task grants. Everything it tries to reach besides the model server goes to a
loopback proxy that refuses it (tests/agents/refusing_proxy.py), so nothing leaves the machine.

The programs come from PATH, from the project-local npm prefix `.ci/node` or from aider's own
venv `.ci/aider`, both of which `.ci/run` installs (pinned versions below); without them these
tests are skipped, naming the install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agents.fake_anthropic import FakeAnthropic
from tests.agents.fake_chat import FakeChat
from tests.agents.fake_gemini import FakeGemini
from tests.agents.fake_responses import FakeResponses
from tests.agents.refusing_proxy import RefusingProxy
from tests.workspaces.test_parallel_coding import init_repo, sh

ROOT = Path(__file__).resolve().parents[2]
# aider's from `.ci/aider/path`, which holds only it (its venv's bin would put that venv's python3 on PATH)
LOCAL_BINS = [ROOT / ".ci" / "node" / "node_modules" / ".bin", ROOT / ".ci" / "aider" / "path"]
NODE_PKGS = "@anthropic-ai/claude-code@2.1.332 opencode-ai@1.18.33 @openai/codex@0.171.0 @google/gemini-cli@0.61.0"
INSTALL = {
    "aider": "python3 -m venv .ci/aider && .ci/aider/bin/pip install aider-chat==0.86.2, aider linked into"
    " .ci/aider/path (what .ci/run does)",
    "node": f"npm install --prefix .ci/node --no-audit --no-fund {NODE_PKGS} (what .ci/run does)",
}
PROXIED = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"]
ANTHROPIC_GRANTED = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    *PROXIED,
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
]
# the variables of other tools the tests' own environment must not leak into a program's run
FOREIGN = ("ANTHROPIC_", "CLAUDE_", "OPENCODE_", "OPENAI_", "CODEX_", "AIDER_", "LITELLM_", "GEMINI_", "GOOGLE_")
OPENAI_KEY = "sk-fake-openai-key"
GEMINI_KEY = "fake-gemini-key"
ALPHA = "hello from alpha\n"
BETA = "hello from beta\n"
Fake = FakeAnthropic | FakeResponses | FakeChat | FakeGemini


@dataclass(frozen=True)
class Program:
    preset: str
    model: str  # the agent's `model:`
    sent_model: str  # what must reach the request's `model` field
    api: str  # "anthropic" (Messages), "responses" (OpenAI Responses), "chat" (OpenAI Chat Completions), "gemini"
    path: str  # the path the program posts to on the model server
    base_path: str = ""  # ANTHROPIC_BASE_URL's path: opencode's client appends /messages, Claude Code /v1/messages
    write_tool: str = ""
    path_arg: str = ""
    granted: list[str] = field(default_factory=lambda: list(ANTHROPIC_GRANTED))  # the agent's `env:`
    login: bool = False  # `settings: {login: true}`: its config comes from the user's HOME
    install: str = "node"
    # the preset's parser reads the program's token counts (aider's "Tokens: N sent, M received."
    # line and gemini's `stats` in its result event are not read: the task's usage stays empty)
    reads_usage: bool = True

    def write(self, name: str, content: str) -> dict[str, Any]:
        """A script entry (for the program's fake) that makes the program write a new file."""
        if self.api == "responses":  # codex: its own patch tool, invoked through its shell tool
            patch = "".join(f"+{line}\n" for line in content.splitlines())
            patch = f"*** Begin Patch\n*** Add File: {name}\n{patch}*** End Patch\n"
            return {
                "tool": "exec_command",
                "arguments": {"cmd": f"apply_patch <<'EOF'\n{patch}EOF\n", "workdir": "{cwd}"},
            }
        if self.api == "chat":  # aider's "whole" edit format: the file's path, then its content fenced
            return {"text": f"{name}\n```\n{content}```\n"}
        if self.api == "gemini":
            return {"call": "write_file", "args": {"file_path": "{cwd}/" + name, "content": content}}
        return {"tool": self.write_tool, "input": {self.path_arg: "{cwd}/" + name, "content": content}}

    def script(self, name: str, content: str, said: str) -> list[dict[str, Any]]:
        """A task's script: the write, then (for programs that send the tool's result back) a
        text answer that ends the turn. aider applies the edits of one answer and stops."""
        return [self.write(name, content)] if self.api == "chat" else [self.write(name, content), {"text": said}]

    def fake(self, script: dict[str, list[dict[str, Any]]]) -> AbstractContextManager[Fake]:
        if self.api == "responses":
            return FakeResponses(script)
        if self.api == "chat":
            return FakeChat(script)
        if self.api == "gemini":
            return FakeGemini(script)
        return FakeAnthropic(script)


PROGRAMS = {
    "claude": Program(
        "claude", "claude-fake-1", "claude-fake-1", "anthropic", "/v1/messages", "", "Write", "file_path"
    ),
    # opencode looks the model up in its catalog (models.dev, bundled) and refuses one it does not
    # know ("Model not found"), so this is a catalogued name; the fake answers whatever is asked.
    "opencode": Program(
        "opencode",
        "anthropic/claude-haiku-4-5",
        "claude-haiku-4-5",
        "anthropic",
        "/v1/messages",
        "/v1",
        "write",
        "filePath",
    ),
    # codex: a custom provider in ~/.codex/config.toml, as a user configures one; the task sees a
    # copy through `login: true` and is granted the provider's `env_key` by name. An unknown model
    # gets codex's fallback tools (exec_command, no apply_patch tool): it patches through its shell.
    "codex": Program(
        "codex",
        "gpt-fake-1",
        "gpt-fake-1",
        "responses",
        "/v1/responses",
        granted=["CODEX_FAKE_API_KEY", *PROXIED],
        login=True,
    ),
    # aider: litellm's OpenAI-compatible provider ("openai/" is the provider, stripped from the
    # request's model); LITELLM_LOCAL_MODEL_COST_MAP keeps litellm's price list off the network.
    "aider": Program(
        "aider",
        "openai/gpt-fake-1",
        "gpt-fake-1",
        "chat",
        "/v1/chat/completions",
        granted=["OPENAI_API_BASE", "OPENAI_API_KEY", "LITELLM_LOCAL_MODEL_COST_MAP", *PROXIED],
        install="aider",
    ),
    # gemini-cli: GOOGLE_GEMINI_BASE_URL alone makes it pick the "gateway" auth type, which its
    # non-interactive mode rejects ("Invalid auth method selected.", exit 41); with the API-key
    # auth chosen in ~/.gemini/settings.json (copied through `login: true`) it honours the URL.
    "gemini": Program(
        "gemini",
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "gemini",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        granted=["GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY", *PROXIED],
        login=True,
    ),
}


def executable(program: Program) -> str:
    found = shutil.which(program.preset) or shutil.which(program.preset, path=os.pathsep.join(map(str, LOCAL_BINS)))
    if found is None:
        pytest.skip(f"{program.preset} is not installed: {INSTALL[program.install]}")
    return found


def run_parallax(tmp_path: Path, repo: Path, doc: dict[str, Any], env: dict[str, str]) -> tuple[int, Any, str]:
    pattern = tmp_path / "tasks.yaml"
    pattern.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'runs.db'}", "run", str(pattern),
         "--run-id", "real", "--json", "--quiet"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    try:
        state = json.loads(lines[-1]) if lines else None
    except ValueError:
        state = None
    return result.returncode, state, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def environment(program: Program, fake: Fake, proxy: RefusingProxy, user_home: Path) -> dict[str, str]:
    """The environment `parallax run` is started with (the user's shell); `user_home` is the
    user's HOME, where the programs configured from files find their config."""
    exe = executable(program)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(proxy.env())
    env["PATH"] = f"{Path(exe).parent}{os.pathsep}{env.get('PATH', '')}"
    if program.api == "anthropic":
        env.update(
            {
                "ANTHROPIC_BASE_URL": fake.base_url + program.base_path,
                "ANTHROPIC_API_KEY": "sk-ant-fake-key",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
        )
    elif program.api == "responses":
        (user_home / ".codex").mkdir(parents=True)
        (user_home / ".codex" / "config.toml").write_text(
            'model_provider = "fake"\n\n'
            "[model_providers.fake]\n"
            'name = "Fake Responses"\n'
            f'base_url = "{fake.base_url}"\n'
            'wire_api = "responses"\n'
            'env_key = "CODEX_FAKE_API_KEY"\n'
        )
        env.update({"HOME": str(user_home), "CODEX_FAKE_API_KEY": OPENAI_KEY})
    elif program.api == "chat":
        env.update(
            {"OPENAI_API_BASE": fake.base_url, "OPENAI_API_KEY": OPENAI_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        )
    elif program.api == "gemini":
        (user_home / ".gemini").mkdir(parents=True)
        settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
        (user_home / ".gemini" / "settings.json").write_text(json.dumps(settings))
        env.update({"HOME": str(user_home), "GOOGLE_GEMINI_BASE_URL": fake.base_url, "GEMINI_API_KEY": GEMINI_KEY})
    return env


def agent(program: Program) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "cli", "preset": program.preset, "model": program.model, "env": program.granted}
    if program.login:
        spec["settings"] = {"login": True}
    return spec


def check_request(program: Program, request: dict[str, Any]) -> None:
    """What every model request of the program carries: the path, the model, the key."""
    assert request["path"].split("?")[0] == program.path, request["path"]
    if program.api == "gemini":  # the model is in the path
        assert request["path"].endswith("?alt=sse"), request["path"]
        assert request["headers"].get("x-goog-api-key") == GEMINI_KEY
        return
    assert request["body"]["model"] == program.sent_model
    if program.api == "anthropic":
        assert request["body"]["stream"] is True
        assert request["headers"].get("x-api-key") == "sk-ant-fake-key"
    else:
        assert (
            request["headers"].get("authorization", request["headers"].get("Authorization")) == f"Bearer {OPENAI_KEY}"
        )
    if program.api == "responses":
        assert request["body"]["stream"] is True


def tool_results_ok(program: Program, request: dict[str, Any]) -> None:
    """The outcome of the previous answer's write, as the program sent it back."""
    if program.api == "responses":
        outputs = FakeResponses.call_outputs(request)
        assert len(outputs) == 1 and "Exit code: 0" in outputs[0] and "Success." in outputs[0], outputs
    elif program.api == "anthropic":
        results = FakeAnthropic.tool_results(request)
        assert len(results) == 1 and not results[0]["is_error"], results
    elif program.api == "gemini":
        responses = FakeGemini.function_responses(request)
        assert len(responses) == 1 and responses[0]["name"] == "write_file", responses
        assert "error" not in responses[0]["response"], responses


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_two_tasks_are_coded_by_the_real_program_and_merged(tmp_path: Path, name: str) -> None:
    program = PROGRAMS[name]
    repo = init_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    script = {
        "Write alpha.txt": program.script("alpha.txt", ALPHA, "Wrote alpha.txt."),
        "Create beta.txt": program.script("beta.txt", BETA, "Created beta.txt."),
    }
    doc = {
        "pattern": "tasks",
        "name": f"real-{name}",
        "workers": 2,
        "verify": "grep -qx 'hello from alpha' alpha.txt && grep -qx 'hello from beta' beta.txt",
        "tasks": {
            "alpha": {"prompt": "Write alpha.txt with a greeting from alpha.", "writes": ["alpha.txt"]},
            # a markdown bullet list: the prompt starts with "- "
            "beta": {"prompt": "- Create beta.txt\n- put a greeting from beta in it\n", "writes": ["beta.txt"]},
        },
    }
    for task in doc["tasks"].values():
        task["agent"] = agent(program)
    with program.fake(script) as fake, RefusingProxy() as proxy:
        env = environment(program, fake, proxy, tmp_path / "user-home")
        started = time.monotonic()
        code, state, detail = run_parallax(tmp_path, repo, doc, env)
        elapsed = time.monotonic() - started
        print(f"{name}: parallax run took {elapsed:.1f}s; refused by the proxy: {proxy.refused}")
        assert code == 0, detail
        assert state is not None, detail
        assert state["status"] == "succeeded", detail
        assert {t: v["status"] for t, v in state["tasks"].items()} == {"alpha": "merged", "beta": "merged"}, detail
        output = state["steps"][0]["output"]
        assert output["verify"]["exit"] == 0, detail
        if program.reads_usage:
            # what the programs reported using reaches the task graph's step and the run
            assert state["steps"][0]["usage"]["input_tokens"] > 0 and state["usage"]["output_tokens"] > 0, detail
        branch = output["branch"]
        assert sh(repo, "git", "show", f"{branch}:alpha.txt") == ALPHA
        assert sh(repo, "git", "show", f"{branch}:beta.txt") == BETA
        # only the tasks' work was committed: no history, cache or config file of the program
        assert sh(repo, "git", "ls-tree", "-r", "--name-only", branch).split() == ["README.md", "alpha.txt", "beta.txt"]
        assert sh(repo, "git", "status", "--porcelain") == ""  # the user's checkout is untouched
        # the repository's config got no identity (aider writes one when it finds none)
        assert "[user]" not in (repo / ".git" / "config").read_text()

        worktrees = (repo / ".parallax" / "runs" / "real" / "worktrees").resolve()
        for key, task in (("Write alpha.txt", "alpha"), ("Create beta.txt", "beta")):
            asked = fake.of(key)
            # one call for the tool, one after its result came back; then the text ended the turn
            assert [r["turn"] for r in asked] == list(range(len(script[key]))), [(r["turn"], r["path"]) for r in asked]
            for request in asked:
                check_request(program, request)
                if program.api != "chat":  # aider states no working directory, only the repo's files
                    assert Path(request["cwd"]).resolve() == worktrees / task  # each in its own worktree
            if len(asked) > 1:
                tool_results_ok(program, asked[1])
        # the prompt reached the model whole, the leading "- " included
        beta_texts = json.dumps(fake.of("Create beta.txt")[0]["body"])
        assert "- Create beta.txt\\n- put a greeting from beta in it" in beta_texts
        # nothing but the model server was reached: other hosts went to the refusing proxy
        paths = [r["path"] for r in (fake.log if isinstance(fake, FakeChat) else fake.requests)]
        assert all(p.startswith(program.path) for p in paths), paths
        if isinstance(fake, FakeAnthropic) and name == "opencode":  # it asks a small model for a title first
            assert fake.side_requests(), "opencode sent no title request"
        elif isinstance(fake, FakeAnthropic):  # with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, nothing else
            assert not fake.side_requests(), [r["body"].get("model") for r in fake.side_requests()]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_model_server_error_fails_the_task_with_its_message(tmp_path: Path, name: str) -> None:
    program = PROGRAMS[name]
    repo = init_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    message = "fake-400: this key may not use that model"
    script = {"Write gamma.txt": [{"status": 400, "message": message}]}
    doc = {
        "pattern": "tasks",
        "name": f"real-{name}-error",
        "tasks": {
            "gamma": {
                "prompt": "Write gamma.txt with a greeting.",
                "writes": ["gamma.txt"],
                "agent": agent(program),
                "max_attempts": 1,
            }
        },
    }
    with program.fake(script) as fake, RefusingProxy() as proxy:
        env = environment(program, fake, proxy, tmp_path / "user-home")
        started = time.monotonic()
        code, state, detail = run_parallax(tmp_path, repo, doc, env)
        print(f"{name}: failing parallax run took {time.monotonic() - started:.1f}s")
        assert code != 0, detail
        assert state is not None, detail
        assert state["status"] == "failed", detail
        gamma = state["tasks"]["gamma"]
        print(f"{name}: the task's error: {gamma['error']}")
        assert gamma["status"] == "failed", detail
        # the server's own words, not "finished without a final answer" or an exit code
        assert gamma["error"].startswith(f"{name}: "), gamma["error"]
        assert message in gamma["error"], gamma["error"]
        assert gamma["commit"] is None and gamma["changed"] == []
        assert fake.of("Write gamma.txt"), "the program never asked the model"
        assert all(r["turn"] == 0 for r in fake.of("Write gamma.txt"))  # no answer ever got through
