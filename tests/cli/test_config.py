"""parallax.toml (user and project), PARALLAX_* overrides, `parallax config show`, presets
from the config, and hooks — through the real CLI in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FANOUT = ROOT / "examples" / "fanout.yaml"


def parallax(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    environ.update({"XDG_CONFIG_HOME": str(project / "user-config"), "PYTHONPATH": str(ROOT)})
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "parallax", *args], cwd=project, env=environ, capture_output=True, text=True, timeout=120
    )


def project_with(tmp_path: Path, text: str) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)  # the project root marker
    (project / "parallax.toml").write_text(text)
    return project


def show(project: Path, env: dict[str, str] | None = None) -> dict[str, tuple[object, str]]:
    result = parallax(project, "config", "show", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["key"]: (row["value"], row["from"]) for row in json.loads(result.stdout)}


def test_layers_and_where_each_value_came_from(tmp_path: Path) -> None:
    project = project_with(tmp_path, 'store = "sqlite:state/p.db"\n[limits]\nconcurrency = 3\n')
    user = project / "user-config" / "parallax"
    user.mkdir(parents=True)
    (user / "parallax.toml").write_text(
        'model = "openai:gpt-4.1"\n[limits]\nconcurrency = 9\n[budget]\nmax_cost_usd = 5.0\n'
    )
    rows = show(project)
    assert rows["store"] == (f"sqlite://{project / 'state' / 'p.db'}", f"{project / 'parallax.toml'}:1")
    assert rows["model"] == ("openai:gpt-4.1", f"{user / 'parallax.toml'}:1")
    assert rows["limits.concurrency"] == (3, f"{project / 'parallax.toml'}:3")  # the project's wins
    assert rows["budget.max_cost_usd"] == (5.0, f"{user / 'parallax.toml'}:5")
    rows = show(project, {"PARALLAX_MODEL": "anthropic:claude-sonnet-4-5", "PARALLAX_CONCURRENCY": "2"})
    assert rows["model"] == ("anthropic:claude-sonnet-4-5", "PARALLAX_MODEL")  # the environment wins
    assert rows["limits.concurrency"] == (2, "PARALLAX_CONCURRENCY")


def test_bad_configuration_is_a_located_error(tmp_path: Path) -> None:
    cases = {
        "[limits]\nconcurrency = 0\n": "parallax.toml:2: limits.concurrency: must be greater than 0",
        "[limit]\nconcurrency = 2\n": "parallax.toml:1: limit: unknown key",
        "model = \n": "parallax.toml: Invalid value",
        "[hooks]\non_finish = 3\n": "parallax.toml:2: hooks.on_finish",
        "[budget]\nmax_tokens = true\n": "parallax.toml:2: budget.max_tokens: must be a whole number",
        '[presets.mine]\nlike = "aider"\n': "parallax.toml:1: presets.mine.argv: is required",
        "budget = 3\n": "parallax.toml:1: budget: must be a table",
    }
    for text, message in cases.items():
        result = parallax(project_with(tmp_path, text), "config", "show")
        assert result.returncode == 2, text
        assert message in result.stderr, (text, result.stderr)
    result = parallax(project_with(tmp_path, ""), "config", "show", env={"PARALLAX_MAX_TOKENS": "lots"})
    assert result.returncode == 2
    assert "PARALLAX_MAX_TOKENS='lots' is not a number" in result.stderr


def test_hooks_run_on_events_and_a_failing_one_is_recorded(tmp_path: Path) -> None:
    project = project_with(
        tmp_path,
        "[hooks]\n"
        # hooks run concurrently: one write per event keeps the lines whole
        'on_step_complete = ["sh", "-c", \'line=$(cat); printf "%s\\n" "$line" >> steps.jsonl\']\n'
        'on_merge = ["sh", "-c", "echo $PARALLAX_HOOK $PARALLAX_RUN_ID > merged.txt"]\n'
        'on_finish = "cat > finished.json"\n'
        'on_conflict = "exit 3"\n',
    )
    result = parallax(project, "run", str(FANOUT), "--run-id", "hooked", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"
    steps = [json.loads(line) for line in (project / "steps.jsonl").read_text().splitlines() if line]
    assert sorted(s["event"]["step"] for s in steps) == ["correctness", "merge", "operations", "performance"]
    assert all(s["hook"] == "on_step_complete" and s["run"] == "hooked" for s in steps)
    assert (project / "merged.txt").read_text().split() == ["on_merge", "hooked"]
    finished = json.loads((project / "finished.json").read_text())
    assert finished["event"]["type"] == "run.finished"
    assert finished["event"]["data"]["status"] == "succeeded"
    # The fan-out's reviewers disagree, so on_conflict ran, failed, and was recorded (not fatal).
    log = parallax(project, "streams", "read", "runs/hooked/hooks", "--json")
    records = [json.loads(line) for line in log.stdout.splitlines()]
    kinds = [(dict(r["headers"])["type"], json.loads(r["body"])["hook"]) for r in records]
    assert ("hook.failed", "on_conflict") in kinds
    assert ("hook.ran", "on_finish") in kinds
    failed = next(json.loads(r["body"]) for r in records if json.loads(r["body"])["hook"] == "on_conflict")
    assert failed["exit"] == 3


def test_a_preset_from_the_config(tmp_path: Path) -> None:
    project = project_with(
        tmp_path,
        "[presets.echoer]\n"
        'like = "aider"\n'
        f'argv = ["{sys.executable}", "-c", "import sys; print(sys.argv[1].upper())", "{{prompt}}"]\n',
    )
    (project / "echo.yaml").write_text(
        "pattern: fanout\nname: echo\nagents:\n  shout:\n    kind: cli\n    preset: echoer\n    prompt: hello there\n"
    )
    result = parallax(project, "run", "echo.yaml", "--json")
    assert result.returncode == 0, result.stderr
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert "HELLO THERE" in json.dumps(steps["shout"]["output"])
    (project / "parallax.toml").write_text('[presets.bad]\nlike = "cursor"\nargv = ["x", "{prompt}"]\n')
    result = parallax(project, "config", "show")
    assert result.returncode == 2
    assert "presets.bad.like: unknown preset 'cursor'" in result.stderr
