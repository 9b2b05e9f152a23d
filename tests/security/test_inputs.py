"""Hostile input from outside: YAML patterns, parallax.toml, --input values and files, store URLs
and numbers on the command line. Each attack goes through the real `parallax` CLI in a fresh
process, with real files in tmp_path, and must end in ONE line on stderr (`error: file:line...`),
exit code 2, no traceback, quickly, and with nothing written.

Numbers below are the issue's items: 10 bounded YAML (and TOML), 11 step ids that cannot collide
with generated ones, 14 one-line errors for bad bytes, numbers, paths and stores, 15 `${NAME}`
expansion that is opt-in and never puts a secret in a plan.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import parallax
from parallax.core.errors import ParallaxError, PlanError, StoreURLError
from parallax.patterns.load import load_target
from parallax.patterns.yaml_loader import compile_pattern, parse_yaml
from parallax.streams.url import open_store

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(parallax.__file__).resolve().parents[1]  # the parallax under test, for the child processes too
MAX_NODES = 100_000  # yaml_loader.MAX_NODES
MAX_DEPTH = 64  # yaml_loader.MAX_DEPTH
BIG = str(2**64)  # one past what any sequence number or count may be

Argument = str | bytes


def parallax_cli(
    cwd: Path, *args: Argument, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    environ.update({"XDG_CONFIG_HOME": str(cwd / "user-config"), "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"})
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "parallax", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The refusal: exit 2, exactly one line on stderr, no traceback; returns that line."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def located(line: str, file: Path | str, at: int | None = None) -> None:
    """The error names the file and a line (and that line, when given)."""
    match = re.match(rf"^error: {re.escape(str(file))}:(\d+)(:\d+)?: ", line)
    assert match, line
    if at is not None:
        assert int(match.group(1)) == at, line


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return lines[occurrence - 1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()  # the project root marker: no parallax.toml above leaks in
    return tmp_path


# 10. YAML (and TOML) within bounds


def laughs(levels: int, width: int) -> str:
    """A "billion laughs" pattern: each anchor repeats the one before `width` times."""
    rows = [f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    rows += [f"  l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "pattern: fanout\nname: lol\nmodel: test\ninputs:\n" + "\n".join(rows) + "\nagents: {a: {}}\n"


BOMBS = {
    # ~380 bytes, 9**7 (4.8 million) values once expanded
    "laughs-382": laughs(7, 9),
    # ~550 bytes, 10**9 values once expanded
    "laughs-545": laughs(9, 10),
    "recursive-alias": "pattern: fanout\nname: x\nmodel: test\ninputs:\n  loop: &a [*a]\nagents: {a: {}}\n",
    "recursive-mapping": "pattern: fanout\nname: x\nmodel: test\ninputs: &top\n  me: *top\nagents: {a: {}}\n",
    "recursive-nested": "pattern: fanout\nname: x\nmodel: test\ninputs:\n  x: &a [1, [2, {k: *a}]]\nagents: {a: {}}\n",
    "deep-flow": "pattern: fanout\nname: x\nmodel: test\ninputs:\n  x: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-block": "pattern: fanout\nname: x\nmodel: test\ninputs:\n"
    + "".join("  " * (i + 1) + "k:\n" for i in range(5000))
    + "agents: {a: {}}\n",
    # deep through an alias: 60 levels, then the alias placed 10 levels down
    "deep-by-alias": "pattern: fanout\nname: x\nmodel: test\ninputs:\n  a: &a "
    + "[" * 60
    + "]" * 60
    + "\n  b: "
    + "[" * 10
    + "*a"
    + "]" * 10
    + "\nagents: {a: {}}\n",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_yaml_bombs_and_deep_nesting_are_refused_at_once(project: Path, name: str) -> None:
    """10: alias bombs, recursive aliases and deep nesting: refused during composition, located,
    before the document is built: parsing allocates tens of megabytes at most (measured, not
    timed, so a loaded machine cannot fail it; before, the small bomb took ~9 s and 210 MB, the
    large one more than 1.9 GB)."""
    text = BOMBS[name]
    path = project / f"{name}.yaml"
    path.write_text(text)
    result = parallax_cli(project, "compile", str(path), timeout=120)
    line = one_line_error(result)
    located(line, path)
    assert re.search(r"nodes|nests deeper|recursive alias", line), line
    tracemalloc.start()
    try:
        with pytest.raises(PlanError) as refused:
            parse_yaml(text, str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak  # expanded, the smallest bomb took 210 MB
    assert str(refused.value).startswith(f"{path}:")


Shape = list[list[int]]  # per anchored level, its items: -1 a scalar, i an alias to level i


def document(shape: Shape) -> tuple[str, int, object]:
    """A chain of anchored lists `l<k>: &l<k> [...]`; returns the YAML text, the number of values
    it expands to (the document, each key, each value, aliases in full), and the data it means."""
    values: list[object] = []
    sizes: list[int] = []
    rows: list[str] = []
    for k, items in enumerate(shape):
        values.append([values[i] if i >= 0 else k for i in items])
        sizes.append(1 + sum(sizes[i] if i >= 0 else 1 for i in items))
        rows.append(f"l{k}: &l{k} [{', '.join(f'*l{i}' if i >= 0 else str(k) for i in items)}]")
    total = 1 + sum(1 + size for size in sizes)
    return "\n".join(rows) + "\n", total, {f"l{k}": values[k] for k in range(len(shape))}


def exactly(total: int) -> Shape:
    """A shape that expands to exactly `total` values: nine-fold levels, then one level that
    fills the rest with the largest aliases that fit, then scalars."""
    shape: Shape = [[-1] * 9, *([[k] * 9 for k in range(4)])]  # sizes 10, 91, 820, 7381, 66430
    _, used, _ = document(shape)
    sizes = [10, 91, 820, 7381, 66430]
    rest, last = total - used - 2, []  # the last level's key and list count 2
    for level in reversed(range(len(sizes))):
        while sizes[level] <= rest:
            last.append(level)
            rest -= sizes[level]
    shape = [*shape, last + [-1] * rest]
    assert document(shape)[1] == total
    return shape


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    levels = draw(st.integers(1, 7))
    return [draw(st.lists(st.integers(-1, k - 1), min_size=1, max_size=12)) for k in range(levels)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes())
@example(exactly(MAX_NODES))
@example(exactly(MAX_NODES + 1))
@example([[-1] * 12, *([[k] * 12 for k in range(6)])])  # 12**7 values
def test_the_node_budget_counts_every_expanded_value(shape: Shape) -> None:
    """10: the count made during composition is exactly the size of the expanded document: up to
    the budget it loads (and means what it says), one value past it it is refused before the
    expansion is built (what it allocates is measured: nothing near the document's size)."""
    text, total, data = document(shape)
    if total <= MAX_NODES:
        parsed, _ = parse_yaml(text, "doc.yaml")
        assert parsed == data
    else:
        tracemalloc.start()
        try:
            with pytest.raises(PlanError, match=r"past 100,000 nodes"):
                parse_yaml(text, "doc.yaml")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("toml", "at"),
    [
        ("store = " + "[" * 5000 + "]" * 5000 + "\n", 1),
        ("[limits]\nconcurrency = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", 2),
    ],
    ids=["arrays", "inline-tables"],
)
def test_deep_toml_is_refused_in_one_line(project: Path, toml: str, at: int) -> None:
    """10: parallax.toml is parsed by a recursive parser (tomllib): nesting past 64 levels is
    refused before parsing (before: a RecursionError traceback from every command)."""
    (project / "parallax.toml").write_text(toml)
    for command in (["config", "show"], ["runs"]):
        line = one_line_error(parallax_cli(project, *command), "nest deeper than 64")
        located(line, project / "parallax.toml", at=at)


# 11. Step ids


MAPREDUCE_S1 = """pattern: mapreduce
name: hang
model: test
inputs: {items: [a, b, c]}
map: {over: input.items, agent: s, reduce: s.1}
agents:
  s: {prompt: "{{input.item}}"}
  s.1: {prompt: "sum up {{upstream}}"}
"""

COLLISIONS = {
    # a name with a '.' could be a generated id (s.1 is map item 1 of s): refused at its own line
    "mapreduce-reduce-named-s.1": (MAPREDUCE_S1, "  s.1:", 1, "agents.s.1"),
    "cohort-member-with-a-dot": (
        "pattern: cohorts\nname: c\nmodel: test\ninputs: {question: q}\nmoderator: {phases: [{name: p}]}\n"
        "cohorts:\n  a:\n    agents: {b.c: {}}\n  a.b:\n    agents: {c: {}}\n",
        "    agents: {b.c: {}}",
        1,
        "cohorts.a.agents.b.c",
    ),
    "consensus-agent-named-vote": (
        "pattern: consensus\nname: c\nmodel: test\nconsensus: {field: answer}\nagents:\n  a: {}\n  vote: {}\n",
        "  vote: {}",
        1,
        "reserved",
    ),
    "review-reviewer-named-review": (
        "pattern: review\nname: r\nmodel: test\nagents:\n  author: {}\n  review: {}\n",
        "  review: {}",
        1,
        "reserved",
    ),
    "fanout-agent-named-merge": (
        "pattern: fanout\nname: f\nmodel: test\nagents:\n  a: {}\n  merge: {}\n",
        "  merge: {}",
        1,
        "reserved",
    ),
    # a duplicate is reported where it is written the second time (it was 1:1)
    "approval-named-like-an-agent": (
        "pattern: pipeline\nname: p\nmodel: test\nagents:\n  draft: {}\n  publish: {}\napprovals:\n"
        "  draft: {after: [publish]}\n",
        "  draft:",
        2,
        "used twice (first at line 5)",
    ),
    "orgchart-parallel-twice": (
        "pattern: orgchart\nname: o\nmodel: test\nroles:\n  lead: {}\n  dev: {reports_to: lead}\n"
        "workflow:\n  - parallel: {role: dev}\n  - parallel: {role: dev}\n",
        "parallel: {role: dev}",
        2,
        "used twice",
    ),
    # two assign stages would both add dev.1.t1, dev.1.t2 ... at run time
    "orgchart-assign-twice": (
        "pattern: orgchart\nname: o\nmodel: test\nroles:\n  lead: {}\n  dev: {reports_to: lead}\n"
        "workflow:\n  - assign: {from: lead, to: dev}\n  - assign: {from: lead, to: dev}\n",
        "assign: {from: lead, to: dev}",
        2,
        "already assigned work",
    ),
}


@pytest.mark.parametrize("name", list(COLLISIONS))
def test_ids_that_could_collide_are_refused_at_their_line(project: Path, name: str) -> None:
    """11: a name that is, or could become, the id of another step is refused when compiling, at
    the line that names it; `run` writes nothing (before, the mapreduce compiled and its run hung,
    and inspect/resume/cancel crashed on it)."""
    text, fragment, occurrence, message = COLLISIONS[name]
    path = project / "pattern.yaml"
    path.write_text(text)
    line = one_line_error(parallax_cli(project, "compile", str(path)), message)
    located(line, path, at=line_of(text, fragment, occurrence))
    store = project / "state" / "p.db"
    one_line_error(parallax_cli(project, "--store", f"sqlite://{store}", "run", str(path), "-q"), message)
    assert not store.parent.exists()


# 14. One line for bad bytes, numbers, paths and stores


def test_arguments_that_are_not_utf8_are_refused(project: Path) -> None:
    """14: `--input brief=$'\\xff'` (a lone surrogate in Python) and its kin: one line, nothing
    written (before: a UnicodeEncodeError traceback while hashing the plan or encoding a header)."""
    pattern = project / "p.yaml"
    pattern.write_text("pattern: fanout\nname: p\nmodel: test\nagents: {a: {prompt: '{{input.brief}}'}}\n")
    store = project / "s.db"
    url = f"sqlite://{store}"
    cases: list[list[Argument]] = [
        ["compile", str(pattern), "--input", b"brief=\xff"],
        ["compile", str(pattern), "--input", b"\xff=x"],
        ["--store", url, "run", str(pattern), "-q", "--input", b"brief=caf\xe9"],
        ["--store", url, "streams", "fence", "s", b"\xfe\xff"],
        ["--store", url, "streams", "append", "s", "--header", b"k=\xff"],
    ]
    for args in cases:
        one_line_error(parallax_cli(project, *args, stdin="x\n"), "not valid UTF-8")
    assert not store.exists()


def test_a_config_file_that_is_not_utf8_is_refused(project: Path) -> None:
    """14: a parallax.toml with a stray Latin-1 byte (before: a UnicodeDecodeError traceback)."""
    (project / "parallax.toml").write_bytes(b'model = "openai:gpt-5"\n[budget]\nnote = "caf\xe9"\n')
    for command in (["config", "show"], ["runs"]):
        line = one_line_error(parallax_cli(project, *command), "not UTF-8")
        assert f"{project / 'parallax.toml'}:3:12: " in line, line


@pytest.mark.parametrize(
    "args",
    [["streams", "trim", "s", BIG], ["streams", "tail", "s", "--from", BIG]],
    ids=["trim", "tail-from"],
)
def test_sequence_numbers_past_64_bits_are_refused(project: Path, args: list[str]) -> None:
    """14: `streams trim` past 64 bits crashed in struct.pack; `streams tail --from` waited forever."""
    url = f"sqlite://{project / 's.db'}"
    assert parallax_cli(project, "--store", url, "streams", "append", "s", stdin="one\n").returncode == 0
    line = one_line_error(parallax_cli(project, "--store", url, *args, timeout=20), "is not in the range")
    assert "parallax streams" in line


def test_a_store_that_is_a_directory_or_not_sqlite_is_refused(project: Path) -> None:
    """14: --store naming a directory, a text file, or a path under a file (before: sqlite3 and
    FileExistsError tracebacks); the text file is left exactly as it was, nothing beside it."""
    (project / "folder").mkdir()
    notes = project / "notes.txt"
    notes.write_text("these are my notes, not a database\n")
    cases = {
        f"sqlite://{project / 'folder'}": "is a directory",
        f"sqlite://{notes}": "is not a SQLite database",
        f"sqlite://{notes}/x.db": "is a file, not a directory",
    }
    for url, message in cases.items():
        for command in (["runs"], ["streams", "ls"], ["streams", "append", "s"]):
            one_line_error(parallax_cli(project, "--store", url, *command, stdin="x\n"), message)
    assert notes.read_text() == "these are my notes, not a database\n"
    assert sorted(p.name for p in project.iterdir()) == [".git", "folder", "notes.txt"]
    assert not any((project / "folder").iterdir())


def test_read_only_commands_do_not_create_a_store(project: Path) -> None:
    """14: a mistyped store directory is an error for commands that only read or act on existing
    runs (before: each created the directory and an empty database and exited 0); `run` and
    `streams append` still create it."""
    store = project / "typo" / "p.db"
    url = f"sqlite://{store}"
    for command in (
        ["runs"],
        ["inspect", "r1"],
        ["tail", "r1"],
        ["cancel", "r1"],
        ["streams", "ls"],
        ["streams", "read", "s"],
        ["streams", "check-tail", "s"],
        ["agents", "confidence", "critic"],
    ):
        one_line_error(parallax_cli(project, "--store", url, *command, timeout=20), "there is no directory")
        assert not store.parent.exists(), command
    assert parallax_cli(project, "--store", url, "streams", "append", "s", stdin="x\n").returncode == 0
    assert store.exists()


def test_nul_in_paths_is_one_line(project: Path) -> None:
    """14: a NUL cannot come through argv, but it can through a function call, parallax.toml
    (`\\u0000`) or a YAML string (`\\0`): each is a located error (before: ValueError tracebacks,
    or a plan that compiled with the NUL in a path)."""
    with pytest.raises(PlanError, match="NUL"):
        load_target("pattern\0.yaml")
    with pytest.raises(StoreURLError, match="NUL"):
        open_store(f"sqlite://{project}/a\0b.db")
    (project / "parallax.toml").write_text('store = "sqlite:state/a\\u0000b.db"\n')
    line = one_line_error(parallax_cli(project, "runs"), "NUL")
    located(line, project / "parallax.toml", at=1)
    (project / "parallax.toml").unlink()
    for field in ('{kind: breakout, pattern: "other\\0.yaml"}', '{model: "scripted:answers\\0.json"}'):
        text = f"pattern: pipeline\nname: p\nagents:\n  a: {field}\n"
        path = project / "p.yaml"
        path.write_text(text)
        line = one_line_error(parallax_cli(project, "compile", str(path)), "NUL")
        located(line, path, at=4)
    assert not (project / "state").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_run(project: Path) -> None:
    """14: `run -o` into a directory or a missing folder was a traceback after the whole run."""
    pattern = project / "p.yaml"
    pattern.write_text("pattern: fanout\nname: p\nmodel: test\nagents: {a: {}}\n")
    (project / "results").mkdir()
    store = project / "s.db"
    for output, message in (("results", "is a directory"), ("missing/r.json", "there is no directory")):
        args = ("--store", f"sqlite://{store}", "run", str(pattern), "-q", "-o", output)
        one_line_error(parallax_cli(project, *args), "--output", message)
    assert not store.exists()


NON_FINITE = {
    "timeout": ("timeout_s: .nan\n", "timeout_s"),
    "budget": ("budget: {max_cost_usd: .nan}\n", "budget.max_cost_usd"),
    "retry": ("retry: {backoff_s: .nan}\n", "retry.backoff_s"),
    "confidence": ("agents:\n  b: {confidence: {accept: .nan}}\n", "agents.b.confidence.accept"),
    "approval-timeout": ("approvals:\n  ok: {after: [a], timeout_s: .inf}\n", "approvals.ok.timeout_s"),
}


@pytest.mark.parametrize("name", list(NON_FINITE))
def test_nan_and_inf_in_numeric_fields_are_refused_at_their_line(project: Path, name: str) -> None:
    """14: NaN passes every `minimum`/`maximum` check (every comparison with it is false): before,
    these gave pydantic tracebacks, an error at 1:1, or a plan with NaN in it."""
    extra, field = NON_FINITE[name]
    agents = "" if extra.startswith("agents:") else "agents:\n"
    text = f"pattern: pipeline\nname: p\nmodel: test\n{extra}{agents}  a: {{}}\n"
    path = project / "p.yaml"
    path.write_text(text)
    line = one_line_error(parallax_cli(project, "compile", str(path)), field, "not a finite number")
    located(line, path, at=line_of(text, "nan" if "nan" in extra else "inf"))


def test_nan_thresholds_are_refused(project: Path) -> None:
    """14: a cascade threshold of .nan compiled (every tier would escalate forever, comparisons false)."""
    text = "pattern: cascade\nname: c\nmodel: test\ncascade: {threshold: .nan}\nagents: {cheap: {}, dear: {}}\n"
    path = project / "c.yaml"
    path.write_text(text)
    line = one_line_error(parallax_cli(project, "compile", str(path)), "cascade.threshold", "not a finite number")
    located(line, path, at=4)


def test_input_files_are_held_to_the_same_rules(project: Path) -> None:
    """14: --input-file JSON nested past Python's recursion limit crashed; NaN went into the plan."""
    pattern = project / "p.yaml"
    pattern.write_text("pattern: fanout\nname: p\nmodel: test\nagents: {a: {}}\n")
    files = {
        "deep.json": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nan.json": '{"a": NaN}',
    }
    for name, content in files.items():
        (project / name).write_text(content)
        url = f"sqlite://{project / 's.db'}"
        one_line_error(parallax_cli(project, "--store", url, "run", str(pattern), "--input-file", name), name)
    assert not (project / "s.db").exists()


# 15. ${NAME} is opt-in, and never a secret


def test_env_expansion_is_opt_in(project: Path) -> None:
    """15: `${NAME}` is filled only for names listed in `env_expand` (before: any name not
    looking like KEY/TOKEN/SECRET/PASSWORD/CREDENTIAL was filled, from whoever ran compile)."""
    text = "pattern: fanout\nname: p\nmodel: test\nagents:\n  a: {prompt: 'about ${TOPIC}'}\n"
    path = project / "p.yaml"
    path.write_text(text)
    env = {"TOPIC": "caching"}
    line = one_line_error(parallax_cli(project, "compile", str(path), env=env), "not listed in env_expand")
    located(line, path, at=5)
    path.write_text(text.replace("agents:", "env_expand: [TOPIC]\nagents:"))
    compiled = parallax_cli(project, "compile", str(path), "--json", env=env)
    assert compiled.returncode == 0, compiled.stderr
    assert json.loads(compiled.stdout)["steps"][0]["prompt"] == "about caching"


# Names the old rule (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL) let through.
SECRET_NAMES = [
    "GITHUB_PAT", "GH_PAT", "DB_PASS", "SMTP_PASSWD", "MYSQL_PWD", "SSHPASS", "DATABASE_URL", "SENTRY_DSN",
    "SLACK_WEBHOOK_URL", "BASIC_AUTH", "OAUTH_CLIENT", "AUTHORIZATION", "SESSION_COOKIE", "REDIS_URL",
    "MONGODB_URI", "POSTGRES_URL",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_looking_names_never_reach_a_plan(name: str) -> None:
    """15: listed or not, a name that looks like a secret is refused, and its value appears nowhere."""
    environ = {name: "hunter2-s3cr3t"}
    for listed in ("", f"env_expand: [{name}]\n"):
        text = f"pattern: fanout\nname: p\nmodel: test\n{listed}agents:\n  a: {{prompt: 'use ${{{name}}}'}}\n"
        with pytest.raises(PlanError) as refused:
            compile_pattern(text, "p.yaml", environ=environ)
        assert "looks like a secret" in str(refused.value)
        assert "hunter2" not in str(refused.value)


def test_credentials_in_a_listed_value_are_refused(project: Path) -> None:
    """15: a harmless name can still carry a secret in its value (a URL with a password, a token)."""
    text = "pattern: fanout\nname: p\nmodel: test\nenv_expand: [UPSTREAM]\nagents:\n  a: {prompt: '${UPSTREAM}'}\n"
    path = project / "p.yaml"
    path.write_text(text)
    for value in ("https://deploy:hunter2@git.example.com/repo", "ghp_" + "a1B2" * 9):
        result = parallax_cli(project, "compile", str(path), env={"UPSTREAM": value})
        one_line_error(result, "looks like a credential")
        assert "hunter2" not in result.stderr + result.stdout and "a1B2" not in result.stderr + result.stdout


def test_every_refusal_is_a_parallax_error() -> None:
    """The refusals above are UserErrors (exit 2), never a bare ValueError from deep inside."""
    for text in (BOMBS["recursive-alias"], MAPREDUCE_S1, "pattern: fanout\nname: p\ntimeout_s: .nan\n"):
        with pytest.raises(ParallaxError):
            compile_pattern(text, "p.yaml")
