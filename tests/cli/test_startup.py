"""The CLI starts light: commands load when used, so `parallax --help` imports no command and
`parallax runs` no engine, model framework, server, planner or NATS client (measured in
bench/cli.py; this checks what is imported, which does not depend on the machine's speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from parallax.cli.main import LAZY, cli

HEAVY = ("pydantic_ai", "fastapi", "uvicorn", "tree_sitter", "nats", "opentelemetry", "mcp", "parallax.engine.runner")


def imported_after(code: str, cwd: Path) -> list[str]:
    names = [*HEAVY, "pydantic", "yaml"]
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_importing_the_cli_imports_no_command(tmp_path: Path) -> None:
    assert imported_after("import parallax.cli", tmp_path) == []


def test_listing_runs_and_reading_a_stream_import_no_engine_framework_or_pydantic(tmp_path: Path) -> None:
    # A project file with every section: reading the settings needs no pydantic either.
    (tmp_path / "parallax.toml").write_text(
        'model = "test"\n[budget]\nmax_tokens = 1000\n[limits]\nconcurrency = 2\n'
        '[hooks]\non_finish = "true"\n[presets.mine]\nargv = ["mine", "{prompt}"]\n'
    )
    store = f"sqlite:///{tmp_path / 'p.db'}"
    for command in (["runs"], ["streams", "read", "runs/none/control"]):
        code = (
            "from parallax.cli.main import cli\n"
            "try:\n"
            f"    cli(['--store', {store!r}, *{command!r}], prog_name='parallax')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, 1), e.code\n"
        )
        assert imported_after(code, tmp_path) == [], command


def test_every_lazy_command_loads_under_its_name_and_shows_its_help() -> None:
    runner = CliRunner()
    context = click.Context(cli)
    for name in LAZY:
        command = cli.get_command(context, name)
        assert isinstance(command, click.Command) and command.name == name, name
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
    listed = runner.invoke(cli, ["--help"])
    assert listed.exit_code == 0
    assert all(f"  {name} " in listed.output for name in LAZY)


def test_inspecting_and_reading_import_no_engine_or_framework(tmp_path: Path) -> None:
    code = "import parallax.cli.report, parallax.cli.streams, parallax.cli.listing"
    assert [m for m in imported_after(code, tmp_path) if m in HEAVY] == []
