"""Merge steps: assemble the inputs' typed contributions (or count their votes) and record the
document with every conflict, in one atomic append."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from parallax.agents.refs import resolve_model, resolve_ref
from parallax.core import events as ev
from parallax.core.conflicts import Conflict
from parallax.core.merge import PythonRule, count_votes, merge_contributions
from parallax.core.plan import Step
from parallax.core.state import describe_gap
from parallax.engine.steps.context import StepContext


async def run_merge(ctx: StepContext, step: Step) -> None:
    assert step.merge is not None
    spec = step.merge
    contributions: dict[str, Mapping[str, Any]] = {}
    gaps: dict[str, str] = {}
    for dep in step.after:
        dep_state = ctx.state.steps[dep]
        if dep_state.status == "succeeded":
            output = dep_state.output
            contributions[dep] = output if isinstance(output, Mapping) else {"value": output}
        else:
            gaps[dep] = describe_gap(dep_state)
    if spec.vote is not None:
        confidences = {d: ctx.state.steps[d].confidence for d in contributions}
        voted = count_votes(
            contributions, confidences, gaps, spec.vote.field, weighted=spec.vote.weighted, step=step.id
        )
        await record_merge(ctx, step, voted.document, voted.conflicts, missing=sorted(gaps))
        return
    target = resolve_model(spec.target, ctx.plan, ctx.state.plan_hash) if spec.target else None
    rules: dict[str, PythonRule] = {}
    for rule in spec.rules:
        if rule.kind == "python" and rule.ref:
            rules[rule.name] = resolve_ref(rule.ref)
    outcome = merge_contributions(
        contributions,
        gaps,
        spec,
        target_fields=list(target.model_fields) if target else (),
        python_rules=rules,
        step=step.id,
    )
    conflicts = list(outcome.conflicts)
    document: Any = outcome.document
    if target is not None:
        try:
            document = target.model_validate(outcome.document).model_dump(mode="json")
        except ValidationError as e:
            conflicts.append(
                Conflict(
                    kind="schema",
                    path=spec.target or "",
                    message=f"the merged document does not fit {spec.target}: {e.error_count()} error(s): "
                    + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5]),
                    step=step.id,
                )
            )
    await record_merge(ctx, step, document, conflicts, missing=sorted(gaps))


async def record_merge(
    ctx: StepContext, step: Step, document: Any, conflicts: list[Conflict], missing: list[str] | None = None
) -> None:
    """Record the merge: its conflicts, then its document; or, when fewer inputs contributed
    than the merge needs (`MergeSpec.min_contributions`, default all), its conflicts and a
    failure naming the missing inputs."""
    events = [ev.StepStarted(1, "merge").event(step.id)]
    events += [ev.ConflictFound(c.model_dump(mode="json")).event(step.id) for c in conflicts]
    missing = missing or []
    needed = step.merge.needed(len(step.after)) if step.merge is not None else 0
    if len(step.after) - len(missing) < needed:
        allowed = "no missing input" if needed == len(step.after) else f"at least {needed} contribution(s)"
        error = (
            f"{len(step.after) - len(missing)} of {len(step.after)} inputs contributed ({', '.join(missing)} did not);"
            f" this merge needs {allowed} (set min_contributions to allow gaps)"
        )
        events.append(ev.StepFailed(error).event(step.id))
        await ctx.emit(*events)
        return
    merged = {"document": document, "conflicts": [c.model_dump(mode="json") for c in conflicts]}
    events.append(ev.StepOutput(merged, attempt=1).event(step.id))
    await ctx.emit(*events)  # one atomic append: a merge is recorded whole or not at all
