"""The code graph and the planner on real git repositories built by the test (with a history
whose co-change is known), and the CLI around them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from parallax.cli import cli
from parallax.patterns.yaml_loader import load_pattern
from parallax.planner.decompose import decompose, naive
from parallax.planner.graph import build_graph, load_graph, strongly_connected
from parallax.planner.plan import Proposal, ProposedTask, repair

FILES = {
    "app/__init__.py": "",
    "app/models.py": "class User:\n    pass\n\nclass Order:\n    pass\n",
    "app/db.py": "from .models import User\nfrom . import config\n",
    "app/config.py": "import os\n",
    "app/api/__init__.py": "",
    "app/api/routes.py": "from ..models import Order\nfrom app.db import User\nfrom app.api import handlers\n",
    "app/api/handlers.py": "from . import routes\n",  # a cycle with routes
    "app/billing/__init__.py": "",
    "app/billing/invoice.py": "import app.models\nfrom app.billing.tax import rate\n",
    "app/billing/tax.py": "def rate():\n    return 0.2\n",
    "tests/test_billing.py": "from app.billing.invoice import *\n",
    "tests/test_api.py": "import app.api.routes\n",
    "web/src/index.ts": "import { api } from './api';\nimport React from 'react';\nconst util = require('../lib/util');\n",
    "web/src/api.ts": "export * from './client';\n",
    "web/src/client.ts": "export const api = 1;\n",
    "web/lib/util.js": "module.exports = {};\n",
    "README.md": "# app\n",
    "app/lazy.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.models import User\n"
        "def f():\n    from app.billing import tax\n"
        "try:\n    import app.db\nexcept ImportError:\n    pass\n"
    ),
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "t")
    git(root, "config", "user.email", "t@t")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    for i in range(4):  # invoice and tax always change together; config alone
        for name in ("app/billing/invoice.py", "app/billing/tax.py"):
            (root / name).write_text((root / name).read_text() + f"# {i}\n")
        git(root, "commit", "-qam", f"billing {i}")
        (root / "app/config.py").write_text((root / "app/config.py").read_text() + f"# {i}\n")
        git(root, "commit", "-qam", f"config {i}")
    return root


def test_imports_are_resolved_exactly(repo: Path) -> None:
    graph = build_graph(repo)
    assert graph.deps("app/db.py") == ["app/config.py", "app/models.py"]
    assert graph.deps("app/api/routes.py") == ["app/api/handlers.py", "app/db.py", "app/models.py"]
    assert graph.deps("app/billing/invoice.py") == ["app/billing/tax.py", "app/models.py"]
    assert graph.deps("web/src/index.ts") == ["web/lib/util.js", "web/src/api.ts"]  # 'react' is a package
    assert graph.deps("web/src/api.ts") == ["web/src/client.ts"]
    assert graph.dependents("app/models.py") == [
        "app/api/routes.py",
        "app/billing/invoice.py",
        "app/db.py",
        "app/lazy.py",
    ]
    assert graph.deps("app/lazy.py") == ["app/billing/tax.py", "app/db.py", "app/models.py"]  # nested imports too
    assert graph.cycles() == [["app/api/handlers.py", "app/api/routes.py"]]
    assert graph.tests_for("app/models.py") == ["tests/test_api.py", "tests/test_billing.py"]
    assert graph.tests_for("app/billing/tax.py") == ["tests/test_billing.py"]
    assert graph.definitions["app/models.py"] == ["User", "Order"]
    assert graph.users["app/models.py::User"] == {"app/db.py", "app/lazy.py"}
    assert graph.users["app/models.py::Order"] == {"app/api/routes.py"}
    assert graph.files["tests/test_api.py"]["test"] and not graph.files["app/db.py"]["test"]
    assert graph.cochange[("app/billing/invoice.py", "app/billing/tax.py")] == 4 + 1 / 17  # + the 18-file first commit
    assert graph.changes["app/config.py"] == 5


def test_the_graph_is_cached_per_revision_and_reads_past_revisions(repo: Path) -> None:
    first = load_graph(repo)
    cached = list((repo / ".git" / "parallax" / "graphs").iterdir())
    assert len(cached) == 1
    assert load_graph(repo).to_json() == first.to_json()
    old = build_graph(repo, "HEAD~8")
    assert old.changes.get("app/config.py") == 1


def test_tarjan_is_iterative() -> None:
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(20000)}
    chain["m20000"] = {"m0"}
    components = strongly_connected([*chain, "m20000"], chain)
    assert max(len(c) for c in components) == 20001


def test_decomposition_keeps_cycles_and_co_change_together(repo: Path) -> None:
    graph = build_graph(repo)
    plan = decompose(graph, 4, scope=["app/*", "tests/*"])
    owner = {f: t.id for t in plan.tasks for f in t.files}
    files = [f for t in plan.tasks for f in t.files]
    assert len(files) == len(set(files))  # disjoint write sets by construction
    assert owner["app/api/routes.py"] == owner["app/api/handlers.py"]  # an import cycle stays whole
    assert owner["app/billing/invoice.py"] == owner["app/billing/tax.py"]  # strong co-change stays whole
    by_id = {t.id: t for t in plan.tasks}
    for task in plan.tasks:
        for contract in task.contracts:
            assert contract in task.files
        for dep in task.after:
            assert dep in by_id
    # every import across tasks is a contract of the provider, and the reader depends on it
    for source, target in graph.edges():
        if source in owner and target in owner and owner[source] != owner[target]:
            assert target in by_id[owner[target]].contracts
            assert owner[target] in by_id[owner[source]].after
    assert plan.width >= 1 and plan.critical_path >= 1
    assert 0.0 <= plan.coupling_risk <= 1.0
    assert sum(len(w) for w in plan.waves) == len(plan.tasks)


def test_naive_split_is_by_directory(repo: Path) -> None:
    groups = naive(build_graph(repo), 3)
    for group in groups:
        for a in group:
            # a directory never straddles two groups
            others = [g for g in groups if g is not group]
            assert not any(
                f.rsplit("/", 1)[0] == a.rsplit("/", 1)[0] for g in others for f in g if "/" in a and "/" in f
            )


def test_a_flawed_proposal_is_repaired(repo: Path) -> None:
    graph = build_graph(repo)
    proposal = Proposal(
        tasks=[
            ProposedTask(name="api", goal="routes", files=["app/api/routes.py", "app/models.py", "nope.py"]),
            ProposedTask(name="handlers", goal="handlers", files=["app/api/handlers.py", "app/models.py"]),
            ProposedTask(name="billing", goal="tax", files=["app/billing/tax.py"]),
        ]
    )
    plan, notes = repair(graph, proposal, scope=["app/*"])
    owner = {f: t.id for t in plan.tasks for f in t.files}
    assert owner["app/api/routes.py"] == owner["app/api/handlers.py"]  # the split cycle was joined
    assert owner["app/billing/tax.py"] == owner["app/billing/invoice.py"]  # the co-changing pair too
    assert set(owner) == {f for f in graph.files if f.startswith("app/") and f.endswith(".py")}  # nothing lost
    assert any("dropped nope.py" in n for n in notes)
    assert any("app/models.py already belongs to api" in n for n in notes)


def test_plan_cli_writes_a_pattern_that_compiles_and_runs(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "tasks.yaml"
    result = CliRunner().invoke(
        cli, ["plan", str(repo), "--goal", "Add refunds", "--tasks", "3", "--scope", "app/*", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["planner"] == "graph"
    plan = load_pattern(out)
    graph_spec = plan.steps[0].tasks
    assert graph_spec is not None
    doc = yaml.safe_load(out.read_text())
    assert report["tasks"] == len(doc["tasks"])
    assert all(task["agent"]["kind"] == "coder" for task in doc["tasks"].values())


def test_plan_with_a_planner_agent(repo: Path, tmp_path: Path) -> None:
    answers = tmp_path / "planner.json"
    answers.write_text(json.dumps({"planner": [{"tasks": [
        {"name": "api", "goal": "refund endpoint", "files": ["app/api/routes.py"]},
        {"name": "billing", "goal": "refund invoices", "files": ["app/billing/invoice.py", "app/billing/tax.py"]},
    ]}]}))  # fmt: skip
    out = tmp_path / "tasks.yaml"
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            str(repo),
            "--goal",
            "Refunds",
            "--scope",
            "app/*",
            "--model",
            f"scripted:{answers}",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["planner"].startswith("scripted:")
    assert any("kept 2 coupled files together" in n or "assigned" in n for n in report["notes"])
    doc = yaml.safe_load(out.read_text())
    prompts = " ".join(t["prompt"] for t in doc["tasks"].values())
    assert "refund invoices" in prompts and "refund endpoint" in prompts


def test_graph_cli(repo: Path) -> None:
    runner = CliRunner()
    built = runner.invoke(cli, ["graph", str(repo)])
    assert built.exit_code == 0, built.output
    assert "1 import cycle(s)" in built.output
    deps = runner.invoke(cli, ["graph", "query", str(repo), "--deps", "app/db.py", "--json"])
    assert json.loads(deps.output) == ["app/config.py", "app/models.py"]
    coupled = runner.invoke(cli, ["graph", "query", str(repo), "--coupled", "app/billing/tax.py", "--json"])
    assert json.loads(coupled.output)[0] == {"file": "app/billing/invoice.py", "weight": 4.059}
    dot = runner.invoke(cli, ["graph", str(repo), "--dot"])
    assert '"app/db.py" -> "app/models.py";' in dot.output
    missing = runner.invoke(cli, ["graph", "query", str(repo), "--deps", "nope.py"])
    assert missing.exit_code == 2
    assert "nope.py is not a file" in missing.output
    two = runner.invoke(cli, ["graph", "query", str(repo), "--deps", "app/db.py", "--cycles"])
    assert two.exit_code == 2
    not_git = runner.invoke(cli, ["graph", str(repo.parent)])
    assert not_git.exit_code == 2


def test_decompose_bench_runs_on_a_small_history(repo: Path) -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "decompose.py"
    result = subprocess.run([sys.executable, str(bench), str(repo), "--tasks", "3", "--replay", "4"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT planner_collision=") and " files=" in last
    figures = dict(item.split("=") for item in last.split()[1:])
    assert {"ratio", "width", "naive_same_width_ratio", "speedup"} <= set(figures)
    assert int(figures["width"]) >= 1 and float(figures["speedup"]) >= 1.0
