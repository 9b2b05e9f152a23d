"""`parallax research "QUESTION"`: a method designed for the question, an estimate before any
model is called, the research run live, and its answer in words at the end.

parallax research "Should we move to microservices this year?"
parallax research "How many users will we have in 2027?" --method delphi --cohorts 4 --yes
parallax research "Is our auth design sound?" --agent claude --agent llm --model anthropic:claude-sonnet-4-5
parallax research "..." --plan-only > research.yaml     # the designed pattern; `parallax run` takes it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click
import yaml
from rich.console import Console

from parallax.cli.context import CliContext, fail, run_with_store
from parallax.cli.runs import check_output, execute, finish
from parallax.cli.spend import confirm_spend, with_default_budget
from parallax.core.errors import UserError
from parallax.core.plan import Plan
from parallax.core.state import RunState
from parallax.engine import api
from parallax.engine.runner import Runner
from parallax.estimate import Estimate, estimate_plan
from parallax.launch import load_plan, run_options
from parallax.model_choice import model_choice
from parallax.research import (
    METHODS,
    OFFLINE_NOTE,
    Method,
    ResearchDesign,
    builtin_design,
    design_pattern,
    offline_answers,
    to_pattern,
    with_flags,
)
from parallax.settings import Settings, find_project_root
from parallax.streams.base import StreamStore

_MEMBER_KINDS = ("llm", "claude", "codex", "aider", "opencode", "gemini")


def _constraints(flags: dict[str, Any], members: tuple[str, ...]) -> str:
    fixed = [f"{name.replace('_', ' ')}: {value}" for name, value in flags.items() if value is not None]
    if members and members != ("llm",):
        fixed.append(f"members are coding-agent CLIs as well as models: {', '.join(members)}")
    return ("Fixed by the person asking (keep these): " + "; ".join(fixed) + ".") if fixed else ""


def _yaml(pattern: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(pattern, sort_keys=False, allow_unicode=True, width=100)
    return text


@click.command()
@click.argument("question")
@click.option("--method", type=click.Choice(METHODS), help="Fix the method (default: designed for the question).")
@click.option("--cohorts", type=click.IntRange(2, 8), help="How many isolated cohorts.")
@click.option("--agents-per-cohort", type=click.IntRange(1, 6), help="Members in each cohort.")
@click.option("--max-rounds", type=click.IntRange(1, 20), help="An upper bound on rounds.")
@click.option(
    "--agent", "members", multiple=True, type=click.Choice(_MEMBER_KINDS),
    help="What the members are, cycled over them: llm (a model) or a coding-agent CLI; mixed allowed.",
)  # fmt: skip
@click.option("--model", "models", multiple=True, metavar="[ROLE=]MODEL", help="As `parallax run --model`.")
@click.option("--plan-only", is_flag=True, help="Print the designed pattern as YAML and stop.")
@click.option("--estimate", "estimate_only", is_flag=True, help="Print the estimate and stop.")
@click.option("--yes", "-y", is_flag=True, help="Spend without asking (the estimate is still printed).")
@click.option("--run-id", help="Use this run id instead of a generated one.")
@click.option("--quiet", "-q", is_flag=True, help="No live lanes.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as JSON.")
@click.option("--output", "-o", metavar="FILE", help="Write the report to FILE.md, or the result to FILE as JSON.")
@click.pass_context
def research(
    ctx: click.Context,
    question: str,
    method: str | None,
    cohorts: int | None,
    agents_per_cohort: int | None,
    max_rounds: int | None,
    members: tuple[str, ...],
    models: tuple[str, ...],
    plan_only: bool,
    estimate_only: bool,
    yes: bool,
    run_id: str | None,
    quiet: bool,
    as_json: bool,
    output: str | None,
) -> None:
    """Research QUESTION with isolated cohorts of agents and a moderator, then print the answer."""
    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")
    check_output(output)
    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]
    settings = cli.settings
    console = Console(stderr=as_json or plan_only)
    choice = model_choice(models, settings.default_model())
    model = choice.flag or choice.configured
    flags: dict[str, Any] = {
        "method": cast(Method | None, method),
        "cohorts": cohorts,
        "agents_per_cohort": agents_per_cohort,
        "max_rounds": max_rounds,
    }
    offline = model is None and not choice.by_role and set(members) <= {"llm"}
    if offline:
        console.print(OFFLINE_NOTE, style="yellow", highlight=False)
        design = builtin_design(question, **flags)
        answers = _write_answers(question, design)
        pattern = to_pattern(question, design, members=list(members) or None, model=f"scripted:{answers}")
        text = _yaml(pattern)
        if plan_only:
            click.echo(text, nl=False)
            return
        plan = load_plan(settings, pattern=text, source="<research>", models=models)
        _run(ctx, console, plan, question, settings, yes=True, estimate_only=estimate_only, run_id=run_id,
             quiet=quiet, as_json=as_json, output=output)  # fmt: skip
        return

    async def designed(store: StreamStore) -> ResearchDesign:
        # Before any model is called: what the whole research will cost, sized by the method the
        # flags allow (the designed one is bounded by the same limits).
        proxy = load_plan(settings, pattern=_yaml(to_pattern(question, builtin_design(question, **flags),
                          members=list(members) or None)), source="<research>", models=models)  # fmt: skip
        design_plan = load_plan(settings, pattern=_yaml(design_pattern(question, _constraints(flags, members))),
                                source="<research design>", models=models)  # fmt: skip
        estimate = estimate_plan(design_plan) + estimate_plan(proxy)
        if estimate_only:
            _print_estimate(console, estimate, as_json)
            raise SystemExit(0)
        confirm_spend(console, estimate, yes=yes or plan_only, budget_set=_budget_set(settings), show=True)
        console.print(f"designing the method for this question with {model or 'the chosen models'}…", highlight=False)
        design_run = await api.create_run(store, with_default_budget(design_plan, estimate), source="research design")
        state = await Runner(store, design_run, run_options(settings)).run()
        step = state.steps.get("designer")
        if state.status != "succeeded" or step is None or step.output is None:
            error = step.error if step is not None else state.status
            fail(f"the designer step of run {design_run} did not design a method: {error}")
        return with_flags(ResearchDesign.model_validate(step.output), **flags)

    design = run_with_store(ctx, designed)
    text = _yaml(to_pattern(question, design, members=list(members) or None))
    if plan_only:
        click.echo(text, nl=False)
        return
    console.print(
        f"method: {design.method}, {len(design.cohorts)} cohorts ({', '.join(c.name for c in design.cohorts)}), "
        f"phases {' → '.join(p.name for p in design.phases)}" + (f"; {design.rationale}" if design.rationale else ""),
        highlight=False,
    )
    plan = load_plan(settings, pattern=text, source="<research>", models=models)
    _run(ctx, console, plan, question, settings, yes=True, estimate_only=False, run_id=run_id, quiet=quiet,
         as_json=as_json, output=output)  # fmt: skip


def _budget_set(settings: Settings) -> bool:
    return settings.max_tokens is not None or settings.max_cost_usd is not None


def _print_estimate(console: Console, estimate: Estimate, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(estimate.as_dict()))
    else:
        for line in estimate.lines():
            console.print(line, highlight=False, soft_wrap=True)


def _write_answers(question: str, design: ResearchDesign) -> Path:
    """The offline run's scripted answers, kept under the project's .parallax/research/."""
    folder = find_project_root() / ".parallax" / "research"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"offline-{design.method}-{len(design.cohorts)}x{design.cohorts[0].agents}.answers.json"
        path.write_text(json.dumps(offline_answers(question, design), indent=1))
    except OSError as e:
        raise UserError(f"cannot write the offline answers under {folder}: {e.strerror}") from None
    return path


def _run(
    ctx: click.Context,
    console: Console,
    plan: Plan,
    question: str,
    settings: Settings,
    *,
    yes: bool,
    estimate_only: bool,
    run_id: str | None,
    quiet: bool,
    as_json: bool,
    output: str | None,
) -> None:
    estimate = estimate_plan(plan)
    if estimate_only:
        _print_estimate(console, estimate, as_json)
        return
    plan = with_default_budget(plan, estimate)
    if not as_json:
        for line in estimate.lines():
            console.print(line, highlight=False, soft_wrap=True)

    async def action(store: StreamStore) -> RunState:
        new_id = await api.create_run(store, plan, run_id=run_id, source=f"research: {question}")
        if not as_json:
            console.print(f"run [bold]{new_id}[/] ({len(plan.steps)} steps to start; the moderator adds rounds)")
        options = run_options(settings, workdir=Path.cwd())
        return await execute(store, new_id, options, console, quiet or as_json)

    finish(console, run_with_store(ctx, action), as_json, output)
