"""`parallax streams ...` end to end: real store files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from parallax.cli import cli
from tests.processes import read_line, stop


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'cli.db'}"


def px(store_url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--store", store_url, *args], input=input, catch_exceptions=False)


def test_append_then_read(store_url: str) -> None:
    result = px(store_url, "streams", "append", "runs/r1/control", "--header", "type=note", input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert "appended 2 record(s) at 0..1; tail 2" in result.output
    result = px(store_url, "streams", "read", "runs/r1/control", "--json")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["seq_num"], r["body"], r["headers"]) for r in lines] == [
        (0, "one", [["type", "note"]]),
        (1, "two", [["type", "note"]]),
    ]
    assert px(store_url, "streams", "check-tail", "runs/r1/control").output.strip() == "2"
    assert px(store_url, "streams", "ls", "runs/").output.split() == ["runs/r1/control"]


def test_read_start_positions_and_limit(store_url: str) -> None:
    px(store_url, "streams", "append", "s", input="".join(f"{i}\n" for i in range(10)))

    def bodies(*args: str) -> list[str]:
        result = px(store_url, "streams", "read", "s", *args)
        assert result.exit_code == 0, result.output
        return [line.split("\t")[1] for line in result.output.splitlines()]

    assert bodies("--from", "7") == ["7", "8", "9"]
    assert bodies("--tail-offset", "2") == ["8", "9"]
    assert bodies("--from", "2", "--limit", "3") == ["2", "3", "4"]
    assert bodies("--from-time", "0", "--limit", "1") == ["0"]
    result = px(store_url, "streams", "read", "s", "--from", "1", "--tail-offset", "1")
    assert result.exit_code == 2 and "give one start position" in result.output


def test_long_input_is_split_into_batches(store_url: str) -> None:
    result = px(store_url, "streams", "append", "s", input="".join(f"{i}\n" for i in range(2500)))
    assert result.exit_code == 0 and "appended 2500 record(s) at 0..2499" in result.output
    out = px(store_url, "streams", "read", "s", "--from", "2499").output
    assert out == "2499\t2499\n"


def test_failed_conditional_append_writes_nothing(store_url: str) -> None:
    px(store_url, "streams", "append", "s", input="a\n")
    result = px(store_url, "streams", "append", "s", "--match-seq", "0", input="b\nc\n")
    assert result.exit_code == 1
    assert result.output.strip() == "error: sequence number mismatch on 's': the tail is 1 (match_seq_num was 0)"
    assert px(store_url, "streams", "check-tail", "s").output.strip() == "1"


def test_fence_and_trim_and_fork(store_url: str) -> None:
    px(store_url, "streams", "append", "s", input="a\nb\nc\n")
    assert px(store_url, "streams", "fence", "s", "w1").exit_code == 0
    result = px(store_url, "streams", "append", "s", "--fence", "w2", input="x\n")
    assert result.exit_code == 1 and "fenced with 'w1'" in result.output
    assert px(store_url, "streams", "append", "s", "--fence", "w1", input="d\n").exit_code == 0
    assert px(store_url, "streams", "trim", "s", "2").exit_code == 0
    out = px(store_url, "streams", "read", "s").output.splitlines()
    assert out == ["2\tc", "3\t[fence 'w1']", "4\td", "5\t[trim 2]"]
    assert px(store_url, "streams", "fork", "s", "copy", "--at", "4").exit_code == 0
    assert px(store_url, "streams", "read", "copy").output.splitlines() == ["2\tc", "3\t[fence 'w1']"]
    result = px(store_url, "streams", "fork", "s", "copy", "--at", "1")
    assert result.exit_code == 1 and "already exists" in result.output


@pytest.mark.parametrize(
    ("args", "input", "code", "message"),
    [
        (["streams", "append", "s", "--header", "novalue"], "a\n", 2, "expected NAME=VALUE"),
        (["streams", "append", "s"], "", 2, "standard input was empty"),
        (["streams", "append", "s"], "x" * (1024 * 1024) + "\n", 2, "metered bytes"),
        (["streams", "read", "missing"], None, 1, "stream not found: 'missing'"),
        (["streams", "read", "s", "--from", "-1"], None, 2, "-1"),
        (["streams", "fork", "a", "b"], None, 2, "--at"),
        (["streams", "trim", "missing", "3"], None, 0, "trimmed"),
    ],
)
def test_errors_are_one_clear_line(store_url: str, args: list[str], input: str | None, code: int, message: str) -> None:
    result = px(store_url, *args, input=input)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_oversized_line_writes_nothing(store_url: str) -> None:
    px(store_url, "streams", "append", "s", input="keep\n")
    result = px(store_url, "streams", "append", "s", input="ok\n" + "x" * (1024 * 1024) + "\n")
    assert result.exit_code == 2 and "nothing was written" in result.output
    assert px(store_url, "streams", "read", "s").output == "0\tkeep\n"


def test_unknown_store_scheme(tmp_path: Path) -> None:
    result = px("redis://localhost", "streams", "ls")
    assert result.exit_code == 2
    assert "unknown store scheme 'redis'" in result.output and "sqlite" in result.output


def test_default_store_is_under_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    result = CliRunner().invoke(cli, ["streams", "append", "s"], input="a\n")
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".parallax" / "parallax.db").exists()
    monkeypatch.setenv("PARALLAX_STORE", f"sqlite://{tmp_path / 'env.db'}")
    CliRunner().invoke(cli, ["streams", "append", "s"], input="a\n")
    assert (tmp_path / "env.db").exists()


def test_tail_follows_appends_from_another_process(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'tail.db'}"
    env = {**os.environ, "PARALLAX_STORE": url}
    exe = [sys.executable, "-m", "parallax"]
    subprocess.run([*exe, "streams", "create", "s"], env=env, check=True, capture_output=True)
    follower = subprocess.Popen([*exe, "streams", "tail", "s", "--json"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        got = []
        for i in range(3):  # each record appended once the follower has shown the one before: it follows
            subprocess.run(
                [*exe, "streams", "append", "s"], env=env, input=f"m{i}\n", text=True, check=True, capture_output=True
            )
            got.append(json.loads(read_line(follower.stdout))["body"])
        assert got == ["m0", "m1", "m2"]
    finally:
        stop(follower)
