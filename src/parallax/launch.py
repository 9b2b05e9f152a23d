"""The one launch path: (target or pattern, inputs, settings) -> a plan and the options to run it.

Every entry point goes through here: the CLI's run/resume/fork, the server's POST /runs and its
schedules, the MCP tools, and workers (sub-runs inherit their parent's options). So the same
`parallax.toml` / `PARALLAX_*` settings apply the same way wherever a run starts:

- `budget` ([budget] / PARALLAX_MAX_TOKENS, PARALLAX_MAX_COST_USD) is the plan's budget when the
  plan sets none;
- `concurrency` ([limits] / PARALLAX_CONCURRENCY) caps a run's steps unless the caller asks for
  another cap;
- `hooks` ([hooks]) run on the run's events in whichever process coordinates it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallax.core.errors import UserError
from parallax.core.plan import Budget, Plan
from parallax.engine.options import RunOptions
from parallax.model_choice import model_choice
from parallax.patterns.load import load_target
from parallax.patterns.yaml_loader import compile_pattern
from parallax.settings import HOOK_EVENTS, HooksConfig, Settings


@dataclass(frozen=True)
class Launch:
    plan: Plan
    options: RunOptions


def configured_hooks(settings: Settings) -> HooksConfig | None:
    """The [hooks] of the settings, or None when none is configured."""
    hooks = settings.hooks
    return hooks if any(getattr(hooks, name) for name in HOOK_EVENTS) else None


def run_options(
    settings: Settings,
    *,
    workdir: Path | None = None,
    concurrency: int | None = None,
    use_cache: bool = True,
    parent_env: Mapping[str, str] | None = None,
    **more: Any,
) -> RunOptions:
    """The options a run gets from the settings, with the caller's own choices on top."""
    return RunOptions(
        concurrency=concurrency or settings.concurrency,
        use_cache=use_cache,
        workdir=workdir,
        parent_env=parent_env,
        hooks=configured_hooks(settings),
        **more,
    )


def with_settings(plan: Plan, settings: Settings) -> Plan:
    """The plan, with the configured budget when it sets none."""
    if plan.budget.max_tokens is not None or plan.budget.max_cost_usd is not None:
        return plan
    if settings.max_tokens is None and settings.max_cost_usd is None:
        return plan
    return plan.model_copy(
        update={"budget": Budget(max_tokens=settings.max_tokens, max_cost_usd=settings.max_cost_usd)}
    )


def load_plan(
    settings: Settings,
    *,
    target: str | None = None,
    pattern: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    source: str = "<pattern>",
    registry: list[dict[str, Any]] | None = None,
    models: Sequence[str] = (),
) -> Plan:
    """A target (file.yaml, file.py:attr, module:attr) or YAML text, compiled, with the settings
    applied. `models`: the command's --model values (MODEL, ROLE=MODEL), over the configured
    default (`parallax.model_choice`). Blocking (imports, parsing): servers call it in a worker
    thread."""
    if (target is None) == (pattern is None):
        raise UserError("give exactly one of target (a file or module:attr) or pattern (YAML text)")
    choice = model_choice(models, settings.default_model())
    if pattern is not None:
        plan = compile_pattern(pattern, source, dict(inputs or {}), registry=registry, models=choice)
    else:
        plan = load_target(target or "", dict(inputs or {}), models=choice)
    return with_settings(plan, settings)


def model_rows(settings: Settings, target: str, models: Sequence[str] = ()) -> list[tuple[str, Any, str]]:
    """(`model.<step>`, its model, why) for every llm/coder agent of a YAML pattern, for
    `parallax config show TARGET`."""
    if not target.endswith((".yaml", ".yml")):
        raise UserError(f"{target}: config show lists the models of a YAML pattern (a Python plan names its own)")
    from parallax.patterns.yaml_loader import load_pattern

    reasons: dict[str, tuple[str, str]] = {}
    load_pattern(target, models=model_choice(models, settings.default_model()), model_reasons=reasons)
    return [(f"model.{step}", model, why) for step, (model, why) in sorted(reasons.items())]


def prepare(
    settings: Settings,
    *,
    target: str | None = None,
    pattern: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    source: str = "<pattern>",
    workdir: Path | None = None,
    concurrency: int | None = None,
    use_cache: bool = True,
) -> Launch:
    """The plan and the options for a new run."""
    plan = load_plan(settings, target=target, pattern=pattern, inputs=inputs, source=source)
    return Launch(plan, run_options(settings, workdir=workdir, concurrency=concurrency, use_cache=use_cache))
