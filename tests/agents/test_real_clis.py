"""The real Claude Code and opencode programs, driven by `parallax run` on a two-task graph in a
real git repository, against a scripted Anthropic server on loopback (tests/agents/fake_anthropic.py).

Each program runs as the `cli` preset runs it, in the task's own worktree and HOME, with only
the variables the task grants. Everything it tries to reach besides the model server goes to a
loopback proxy that refuses it (tests/agents/refusing_proxy.py), so nothing leaves the machine.

The programs come from PATH or from the project-local npm prefix `.ci/node` that `.ci/run`
installs (pinned versions below); without them these tests are skipped, naming the install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agents.fake_anthropic import FakeAnthropic
from tests.agents.refusing_proxy import RefusingProxy
from tests.workspaces.test_parallel_coding import init_repo, sh

ROOT = Path(__file__).resolve().parents[2]
LOCAL_BIN = ROOT / ".ci" / "node" / "node_modules" / ".bin"
INSTALL = (
    "npm install --prefix .ci/node --no-audit --no-fund @anthropic-ai/claude-code@2.1.332 opencode-ai@1.18.33"
    " (what .ci/run does)"
)
GRANTED = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
]
ALPHA = "hello from alpha\n"
BETA = "hello from beta\n"


@dataclass(frozen=True)
class Program:
    preset: str
    model: str  # the agent's `model:`
    sent_model: str  # what must reach the request's `model` field
    base_path: str  # ANTHROPIC_BASE_URL's path: opencode's client appends /messages, Claude Code /v1/messages
    write_tool: str
    path_arg: str

    def write(self, name: str, content: str) -> dict[str, Any]:
        return {"tool": self.write_tool, "input": {self.path_arg: "{cwd}/" + name, "content": content}}


PROGRAMS = {
    "claude": Program("claude", "claude-fake-1", "claude-fake-1", "", "Write", "file_path"),
    # opencode looks the model up in its catalog (models.dev, bundled) and refuses one it does not
    # know ("Model not found"), so this is a catalogued name; the fake answers whatever is asked.
    "opencode": Program("opencode", "anthropic/claude-haiku-4-5", "claude-haiku-4-5", "/v1", "write", "filePath"),
}


def executable(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(LOCAL_BIN))
    if found is None:
        pytest.skip(f"{name} is not installed: {INSTALL}")
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


def environment(program: Program, fake: FakeAnthropic, proxy: RefusingProxy) -> dict[str, str]:
    exe = executable(program.preset)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "OPENCODE_"))}
    env.update(proxy.env())
    env.update(
        {
            "PATH": f"{Path(exe).parent}{os.pathsep}{env.get('PATH', '')}",
            "ANTHROPIC_BASE_URL": fake.base_url + program.base_path,
            "ANTHROPIC_API_KEY": "sk-ant-fake-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
    )
    return env


def agent(program: Program) -> dict[str, Any]:
    return {"kind": "cli", "preset": program.preset, "model": program.model, "env": GRANTED}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_two_tasks_are_coded_by_the_real_program_and_merged(tmp_path: Path, name: str) -> None:
    program = PROGRAMS[name]
    repo = init_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    script = {
        "Write alpha.txt": [program.write("alpha.txt", ALPHA), {"text": "Wrote alpha.txt."}],
        "Create beta.txt": [program.write("beta.txt", BETA), {"text": "Created beta.txt."}],
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
    with FakeAnthropic(script) as fake, RefusingProxy() as proxy:
        started = time.monotonic()
        code, state, detail = run_parallax(tmp_path, repo, doc, environment(program, fake, proxy))
        elapsed = time.monotonic() - started
        print(f"{name}: parallax run took {elapsed:.1f}s; refused by the proxy: {proxy.refused}")
        assert code == 0, detail
        assert state is not None, detail
        assert state["status"] == "succeeded", detail
        assert {t: v["status"] for t, v in state["tasks"].items()} == {"alpha": "merged", "beta": "merged"}, detail
        output = state["steps"][0]["output"]
        assert output["verify"]["exit"] == 0, detail
        # what the programs reported using reaches the task graph's step and the run
        assert state["steps"][0]["usage"]["input_tokens"] > 0 and state["usage"]["output_tokens"] > 0, detail
        branch = output["branch"]
        assert sh(repo, "git", "show", f"{branch}:alpha.txt") == ALPHA
        assert sh(repo, "git", "show", f"{branch}:beta.txt") == BETA
        assert sh(repo, "git", "status", "--porcelain") == ""  # the user's checkout is untouched

        worktrees = (repo / ".parallax" / "runs" / "real" / "worktrees").resolve()
        for key, task in (("Write alpha.txt", "alpha"), ("Create beta.txt", "beta")):
            asked = fake.of(key)
            # one call for the tool, one after its result came back; then the text ended the turn
            assert [r["turn"] for r in asked] == [0, 1], [(r["turn"], r["path"]) for r in asked]
            for request in asked:
                assert request["path"].split("?")[0] == "/v1/messages"
                assert request["body"]["model"] == program.sent_model
                assert request["body"]["stream"] is True
                assert request["headers"].get("x-api-key") == "sk-ant-fake-key"
                assert Path(request["cwd"]).resolve() == worktrees / task  # each in its own worktree
            results = FakeAnthropic.tool_results(asked[1])
            assert len(results) == 1 and not results[0]["is_error"], results
        # the prompt reached the model whole, the leading "- " included
        beta_texts = json.dumps(fake.of("Create beta.txt")[0]["body"]["messages"])
        assert "- Create beta.txt\\n- put a greeting from beta in it" in beta_texts
        # nothing but the model server was reached: other hosts went to the refusing proxy
        assert all(r["path"].startswith("/v1/messages") for r in fake.requests), [r["path"] for r in fake.requests]
        if name == "opencode":  # it asks a small model for the session's title first
            assert fake.side_requests(), "opencode sent no title request"
        else:  # with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, Claude Code sends nothing else
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
    with FakeAnthropic(script) as fake, RefusingProxy() as proxy:
        started = time.monotonic()
        code, state, detail = run_parallax(tmp_path, repo, doc, environment(program, fake, proxy))
        print(f"{name}: failing parallax run took {time.monotonic() - started:.1f}s")
        assert code != 0, detail
        assert state is not None, detail
        assert state["status"] == "failed", detail
        gamma = state["tasks"]["gamma"]
        assert gamma["status"] == "failed", detail
        # the server's own words, not "finished without a final answer" or an exit code
        assert gamma["error"].startswith(f"{name}: "), gamma["error"]
        assert message in gamma["error"], gamma["error"]
        assert gamma["commit"] is None and gamma["changed"] == []
        assert fake.of("Write gamma.txt"), "the program never asked the model"
        assert all(r["turn"] == 0 for r in fake.of("Write gamma.txt"))  # no answer ever got through
