"""Before spending: print the estimate, and ask.

A run whose estimate costs money (a priced model, or a model whose price is unknown) is shown
its estimate first. On a terminal the person is asked; without one the run is refused unless
`--yes` was given or a budget is configured (`[budget]`, PARALLAX_MAX_COST_USD /
PARALLAX_MAX_TOKENS), which then bounds what it can spend. A run on scripted or local answers
costs nothing and is not asked about. The run's budget, when the plan and the settings set
none, is `BUDGET_MULTIPLE` times the estimate's high end.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console

from parallax.core.errors import UserError
from parallax.core.plan import Budget, Plan
from parallax.estimate import Estimate

BUDGET_MULTIPLE = 3.0


def spends(estimate: Estimate) -> bool:
    """Whether running this calls models Parallax pays for: a priced model, or one whose price
    is unknown. A coding-agent CLI pays its own calls (its login or key): the estimate lists it,
    and the run is not held for it (task graphs run unattended)."""
    high = estimate.cost_usd[1]
    return bool(estimate.unknown_price) or (high is not None and high > 0)


def confirm_spend(console: Console, estimate: Estimate, *, yes: bool, budget_set: bool, show: bool = False) -> None:
    """Print the estimate (always with `show`, else when the run spends), then ask, or refuse."""
    if show or spends(estimate):
        for line in estimate.lines():
            console.print(line, highlight=False, soft_wrap=True)
    if not spends(estimate):
        return
    if yes:
        return
    if sys.stdin.isatty() and sys.stderr.isatty():
        if not click.confirm("Run it?", default=True, err=True):
            raise SystemExit(1)
        return
    if budget_set:
        console.print("no terminal to ask: running within the configured budget", highlight=False)
        return
    raise UserError(
        "this run calls paid models and there is no terminal to ask: pass --yes, or set a budget "
        "([budget] max_cost_usd in parallax.toml, or PARALLAX_MAX_COST_USD)"
    )


def with_default_budget(plan: Plan, estimate: Estimate) -> Plan:
    """The plan with a budget of BUDGET_MULTIPLE x the estimate, when it has none."""
    if plan.budget.max_tokens is not None or plan.budget.max_cost_usd is not None or not spends(estimate):
        return plan
    max_tokens, max_cost = estimate.budget(BUDGET_MULTIPLE)
    if max_tokens is None and max_cost is None:
        return plan
    return plan.model_copy(update={"budget": Budget(max_tokens=max_tokens, max_cost_usd=max_cost)})
