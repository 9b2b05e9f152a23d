"""Filled values never become shell, and a target is never called unless it builds a plan
(items 5 and 6 of the hardening issue).

Values come from `--input`, from upstream agents' output and from models: all untrusted. A
command template is filled in one pass with each value quoted exactly once; a value holding a
reference (`{{ input.x }}`) is text, never filled again inside its own quotes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from parallax.core.errors import PlanError
from parallax.engine import api
from parallax.patterns.load import load_target
from parallax.patterns.yaml_loader import compile_pattern
from parallax.streams.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; echo '",
    '"; touch {marker}; echo "',
    "a\nb; touch {marker}",
    "{{{{ input.x }}}}",
    "{{{{ prompt }}}}",
    "-n --help",
    "\\'$(touch {marker})\\'",
]


def run_pattern(tmp_path: Path, doc: dict[str, Any]) -> Any:
    plan = compile_pattern(yaml.safe_dump(doc, sort_keys=False), str(tmp_path / "p.yaml"))

    async def go() -> Any:
        async with SqliteStore(tmp_path / "t.db") as store:
            return await api.run_plan(store, plan)

    return asyncio.run(go())


@pytest.mark.parametrize("template", HOSTILE)
def test_a_value_is_quoted_once_and_never_filled_again(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "ran"
    value = template.format(marker=marker)
    doc = {
        "pattern": "pipeline",
        "name": "quoting",
        "inputs": {"x": value, "y": "{{ input.x }}"},
        "agents": {
            # The prompt is filled first: it holds the text `{{ input.x }}` (from y). Filled
            # again inside its own quotes, x's quotes would close the prompt's and run x.
            "echo": {
                "kind": "command",
                "prompt": "say {{ input.y }} and {{ input.x }}",
                "command": "printf '[%s]\\n' {{ prompt }} {{input.x}} {{  input.y  }}",
            }
        },
    }
    state = run_pattern(tmp_path, doc)
    assert not marker.exists(), "a filled value ran as shell"
    assert state.status == "succeeded", state.steps["echo"].error
    assert state.steps["echo"].output == f"[say {{{{ input.x }}}} and {value}]\n[{value}]\n[{{{{ input.x }}}}]"


def test_a_value_from_an_upstream_agent_is_text_in_a_later_command(tmp_path: Path) -> None:
    """Model output is the usual carrier: an upstream step's output holding a reference and
    shell is passed on quoted, as one word."""
    marker = tmp_path / "ran"
    evil = f"{{{{ prompt }}}}'$(touch {marker})'"
    source = tmp_path / "model-said.txt"  # what a model answered, as the upstream step's output
    source.write_text(evil)
    doc = {
        "pattern": "pipeline",
        "name": "upstream",
        "agents": {
            "writer": {"kind": "command", "command": f"cat {source}"},
            "reader": {"kind": "command", "after": ["writer"], "prompt": "{{ steps.writer.output }}",
                       "command": "printf '<%s>' {{ prompt }}"},
        },
    }  # fmt: skip
    state = run_pattern(tmp_path, doc)
    assert not marker.exists()
    assert state.status == "succeeded", state.steps["reader"].error
    assert state.steps["reader"].output == f"<{evil}>"


def test_a_nul_in_a_value_fails_the_step_with_a_clear_error(tmp_path: Path) -> None:
    doc = {
        "pattern": "pipeline",
        "name": "nul",
        "agents": {
            "writer": {"kind": "command", "command": "printf 'a\\000b'"},
            "echo": {"kind": "command", "command": "printf '%s' {{ upstream.writer }}"},
        },
    }
    state = run_pattern(tmp_path, doc)
    assert state.status == "failed"
    assert state.steps["echo"].attempts == 1  # not retried: it can never work
    assert "holds a NUL byte" in (state.steps["echo"].error or "")


def test_a_command_list_runs_without_a_shell_each_word_filled_once(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = f"--help $(touch {marker}) {{{{ input.x }}}}"
    doc = {
        "pattern": "pipeline",
        "name": "argv",
        "inputs": {"x": value},
        "agents": {"echo": {"kind": "command", "command": ["printf", "<%s>", "{{ input.x }}", "x={{input.x}}"]}},
    }
    state = run_pattern(tmp_path, doc)
    assert not marker.exists()
    assert state.status == "succeeded", state.steps["echo"].error
    assert state.steps["echo"].output == f"<{value}><x={value}>"


# Item 6: a target names a function; it is called only if it is a plan builder of the target's own.


@pytest.mark.parametrize(
    ("target", "inputs"),
    [
        ("os:system", {"command": "touch {marker}"}),
        ("subprocess:run", {"args": ["touch", "{marker}"]}),
        ("subprocess:getoutput", {"cmd": "touch {marker}"}),
        ("os:popen", {"cmd": "touch {marker}"}),
        ("pathlib:Path.touch", {"self": "{marker}"}),
    ],
)
def test_a_target_that_is_not_a_plan_builder_is_never_called(
    tmp_path: Path, target: str, inputs: dict[str, Any]
) -> None:
    marker = tmp_path / "ran"
    filled = {k: (v.format(marker=marker) if isinstance(v, str) else [x.format(marker=marker) for x in v])
              for k, v in inputs.items()}  # fmt: skip
    with pytest.raises(PlanError):
        load_target(target, filled)
    assert not marker.exists()


def test_a_file_target_naming_an_imported_function_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text("from os import system as plan\nfrom subprocess import getoutput as build\n")
    for attr, name in (("plan", "command"), ("build", "cmd")):
        with pytest.raises(PlanError, match=r"not a function defined in|not a Plan"):
            load_target(f"{tmp_path / 'evil.py'}:{attr}", {name: f"touch {marker}"})
    assert not marker.exists()


def test_a_target_annotated_to_return_something_else_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "other.py").write_text(f"def build() -> int:\n    open({str(marker)!r}, 'w')\n    return 1\n")
    with pytest.raises(PlanError, match="not a Plan"):
        load_target(f"{tmp_path / 'other.py'}:build")
    assert not marker.exists()


def test_the_cli_refuses_os_system_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = subprocess.run(
        [sys.executable, "-m", "parallax", "--store", f"sqlite://{tmp_path / 'x.db'}", "compile", "os:system",
         "--input", f"command=touch {marker}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not marker.exists()
