"""The code graph and the planner from the command line.

parallax graph .                                   # build (and cache) the graph; a summary
parallax graph . --dot > code.dot                  # Graphviz export
parallax graph query . --deps src/app/core.py      # --dependents, --coupled, --tests-for, --cycles
parallax plan . --goal "Add SSO" --tasks 6 -o tasks.yaml   # a task-graph pattern to run
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import click

from parallax.core.errors import UserError
from parallax.planner.graph import CodeGraph, load_graph


def _load(path: str, rev: str, history: int, cache: bool = True) -> CodeGraph:
    try:
        return load_graph(Path(path), rev, history, cache)
    except ValueError as e:
        raise UserError(str(e)) from None


class GraphGroup(click.Group):
    """`parallax graph PATH` builds; `parallax graph query PATH ...` asks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(cls=GraphGroup, invoke_without_command=False)
def graph() -> None:
    """A knowledge graph of a git repository: imports, tests, definitions, co-change."""


_opts = [
    click.option("--rev", default="HEAD", show_default=True, help="The revision to read (committed files only)."),
    click.option("--history", default=2000, show_default=True, help="Commits of history for co-change."),
]


def _with(fn: Any) -> Any:
    for option in reversed(_opts):
        fn = option(fn)
    return fn


@graph.command("build")
@click.argument("path", default=".")
@_with
@click.option("--json", "as_json", is_flag=True, help="The whole graph as JSON.")
@click.option("--dot", is_flag=True, help="The import graph (and strong co-change) in Graphviz DOT.")
@click.option("--no-cache", is_flag=True)
def graph_build(path: str, rev: str, history: int, as_json: bool, dot: bool, no_cache: bool) -> None:
    """Build (or load from the cache) the graph of the repository at PATH."""
    code = _load(path, rev, history, not no_cache)
    if as_json:
        click.echo(json.dumps(code.to_json()))
        return
    if dot:
        click.echo(code.dot())
        return
    langs: dict[str, int] = {}
    for info in code.files.values():
        langs[info["lang"]] = langs.get(info["lang"], 0) + 1
    top = ", ".join(f"{n} {lang}" for lang, n in sorted(langs.items(), key=lambda kv: -kv[1])[:6])
    click.echo(f"{path} at {code.rev[:12]}: {len(code.files)} files ({top})")
    click.echo(
        f"{sum(len(v) for v in code.imports.values())} import edges, {len(code.cycles())} import cycle(s), "
        f"{sum(1 for f in code.files.values() if f['test'])} test files, "
        f"{sum(len(v) for v in code.definitions.values())} definitions, {len(code.cochange)} co-changing pairs"
    )
    click.echo(f"built in {code.build_s:.2f}s (cached under the git directory)")


@graph.command("query")
@click.argument("path", default=".")
@_with
@click.option("--deps", metavar="FILE", help="What FILE imports.")
@click.option("--dependents", metavar="FILE", help="What imports FILE.")
@click.option("--coupled", metavar="FILE", help="Files that change together with FILE.")
@click.option("--tests-for", metavar="FILE", help="Tests that exercise FILE (directly or through imports).")
@click.option("--cycles", is_flag=True, help="Import cycles.")
@click.option("--json", "as_json", is_flag=True)
def graph_query(
    path: str, rev: str, history: int, deps: str | None, dependents: str | None, coupled: str | None,
    tests_for: str | None, cycles: bool, as_json: bool,
) -> None:  # fmt: skip
    """Ask the graph one question."""
    asked = [q for q in (deps, dependents, coupled, tests_for) if q is not None]
    if len(asked) + int(cycles) != 1:
        raise UserError("ask one question: --deps, --dependents, --coupled, --tests-for or --cycles")
    code = _load(path, rev, history)
    subject = asked[0] if asked else None
    if subject is not None and subject not in code.files:
        raise UserError(f"{subject} is not a file of {path} at {code.rev[:12]}")
    result: Any
    if deps:
        result = code.deps(deps)
    elif dependents:
        result = code.dependents(dependents)
    elif coupled:
        result = [{"file": f, "weight": round(w, 3)} for f, w in code.coupled(coupled)]
    elif tests_for:
        result = code.tests_for(tests_for)
    else:
        result = code.cycles()
    if as_json:
        click.echo(json.dumps(result))
        return
    for item in result:
        if isinstance(item, dict):
            click.echo(f"{item['weight']:>8.3f}  {item['file']}")
        elif isinstance(item, list):
            click.echo(" <-> ".join(item))
        else:
            click.echo(item)


@click.command("plan")
@click.argument("path", default=".")
@click.option("--goal", required=True, help="What the work is for.")
@click.option("--scope", multiple=True, metavar="GLOB", help="Only these files (repeatable).")
@click.option("--tasks", "n", type=click.IntRange(1, 200), default=6, show_default=True)
@click.option("--model", default=None, help="A planner model (default: $PARALLAX_MODEL); none: the graph alone.")
@click.option("--offline", is_flag=True, help="Partition from the graph alone, even with a model configured.")
@click.option("--agent", "agent_kind", type=click.Choice(["coder", "claude", "codex", "gemini", "aider", "opencode"]),
              default="coder", show_default=True, help="Who does each task.")  # fmt: skip
@click.option("--verify", default=None, help="The verify command for the integration branch.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the pattern here (default: stdout).")
@click.option("--rev", default="HEAD", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def plan(
    ctx: click.Context, path: str, goal: str, scope: tuple[str, ...], n: int, model: str | None, offline: bool,
    agent_kind: str, verify: str | None, output: str | None, rev: str, as_json: bool,
) -> None:  # fmt: skip
    """Decompose GOAL over the repository at PATH into a task-graph pattern whose write sets are
    disjoint by construction; report width, critical path and coupling risk."""
    from parallax.planner.plan import plan_offline, propose, repair, to_pattern

    settings = ctx.find_root().obj.settings
    code = _load(path, rev, 2000)
    model = model or (None if offline else settings.model)
    notes: list[str] = []
    try:
        if model and not offline:
            proposal = asyncio.run(propose(code, goal, n, model, scope))
            decomposition, notes = repair(code, proposal, scope)
        else:
            decomposition = plan_offline(code, n, scope)
            notes = decomposition.notes
    except ValueError as e:
        raise UserError(str(e)) from None
    agent: dict[str, Any] = {"kind": "cli", "preset": agent_kind} if agent_kind != "coder" else {"kind": "coder"}
    if agent_kind == "coder":
        agent["model"] = model or settings.model or "anthropic:claude-sonnet-4-5"
    name = re.sub(r"[^a-z0-9]+", "-", goal.lower()).strip("-")[:40] or "plan"
    text = to_pattern(decomposition, goal, name, agent, verify)
    if output:
        try:
            Path(output).write_text(text)
        except OSError as e:
            raise UserError(f"cannot write the pattern to {output}: {e.strerror}") from None
    else:
        click.echo(text)
    report = {**decomposition.report(), "planner": model or "graph", "notes": notes}
    if as_json:
        click.echo(json.dumps(report), err=output is None)
    else:
        click.echo(
            f"{report['tasks']} tasks, width {report['width']}, critical path {report['critical_path']}, "
            f"coupling risk {report['coupling_risk']:.3f} (planner: {report['planner']})",
            err=output is None,
        )
        for note in notes:
            click.echo(f"  {note}", err=output is None)
