"""Control steps: pure decisions about what runs next, made from the run's state.

A control step's `expand(step, state)` returns an `Expansion`: its own output, the steps to add,
and which of its dependents now wait for the added steps instead (`rewire`). The engine records
all of it in one atomic append (`step.started`, `steps.added`, `step.output`), so after a crash
the decision is either on the log whole or not at all, and a resumed run folds to the same graph.

Controllers:
- consensus: after a round's vote, stop at `threshold` agreement or `max_rounds`; otherwise
  another round in which every agent sees the others' previous answers.
- cascade: accept a tier's answer at `threshold` confidence, else run the next (costlier) tier.
- map: one step per item of a list (from the inputs or an upstream output), then the reduce.
- review: the reviewers' confidence-weighted approval is the draft's confidence; below
  `approve_at` the author revises with the reviews, up to `max_rounds`.
- moderate: cohorts with a moderator (rounds, phases, the moderator's typed actions, the
  people's topology requests, the synthesis); its session is snapshotted on every decision.
- orgchart / escalate: an org chart's work distribution and its escalation up `reports_to`.

`Expansion` and the helpers every controller shares live in `core/expansion.py` (re-exported
here); the moderator's controller in `core/moderation.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from parallax.core.errors import TemplateError
from parallax.core.expansion import Expansion as Expansion
from parallax.core.expansion import make_step as make_step
from parallax.core.expansion import output_of, succeeded
from parallax.core.expansion import text_of as text_of
from parallax.core.moderation import moderate
from parallax.core.plan import GateSpec, Step
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.core.template import lookup


def expand(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    return _CONTROLLERS[step.control.kind](step, state)


# Consensus


def _consensus(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    settings = step.control.settings
    k = int(settings["round"])  # type: ignore[arg-type]
    threshold = float(settings["threshold"])  # type: ignore[arg-type]
    max_rounds = int(settings["max_rounds"])  # type: ignore[arg-type]
    vote_id = step.after[0]
    vote = (output_of(state, vote_id) or {}).get("document") or {}
    agreement = float(vote.get("agreement") or 0.0)
    history = [
        {"round": j, **{k2: v for k2, v in (output_of(state, f"consensus.r{j}") or {}).items() if k2 != "history"}}
        for j in range(1, k)
    ]
    this_round = {"round": k, "winner": vote.get("winner"), "agreement": agreement}
    if agreement >= threshold or k >= max_rounds:
        return Expansion(
            output={
                "winner": vote.get("winner"),
                "agreement": agreement,
                "reached": agreement >= threshold,
                "rounds": k,
                "votes": vote.get("votes", {}),
                "history": [*history, this_round],
            },
            confidence=agreement,
        )
    voters = state.plan.step(vote_id).after if state.plan else ()
    previous = (
        {state.plan.step(v).agent_name: output_of(state, v) for v in voters if succeeded(state, v)}
        if state.plan
        else {}
    )
    nxt = k + 1
    agents = [
        make_step(t, f"{t['role']}.r{nxt}", (step.id,), input={"round": nxt, "previous": previous})
        for t in step.control.templates
    ]
    vote_step = state.plan.step(vote_id) if state.plan else None
    assert vote_step is not None
    new_vote = vote_step.model_copy(update={"id": f"vote.r{nxt}", "after": tuple(a.id for a in agents)})
    control = step.model_copy(
        update={
            "id": f"consensus.r{nxt}",
            "after": (new_vote.id,),
            "control": step.control.model_copy(update={"settings": {**settings, "round": nxt}}),
        }
    )
    return Expansion(
        output={"round": k, "winner": vote.get("winner"), "agreement": agreement, "next_round": nxt},
        confidence=agreement,
        add=[*agents, new_vote, control],
        rewire={step.id: [control.id]},
    )


# Confidence cascade


def _cascade(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    settings = step.control.settings
    tier = int(settings["tier"])  # type: ignore[arg-type]
    threshold = float(settings["threshold"])  # type: ignore[arg-type]
    templates = step.control.templates
    tried: list[dict[str, Any]] = []
    for i, template in enumerate(templates[:tier]):
        role = str(template["role"])
        st = state.steps.get(role)
        agent = template.get("agent")
        tried.append(
            {
                "tier": i + 1,
                "role": role,
                "model": agent.get("model") if isinstance(agent, dict) else None,
                "status": st.status if st else "pending",
                "confidence": st.confidence if st else None,
            }
        )
    current = tried[-1]
    confidence: float | None = current["confidence"]
    if current["status"] == "succeeded" and (confidence or 0.0) >= threshold:
        return Expansion(
            output={"answer": output_of(state, current["role"]), **_pick(current), "accepted": True, "tried": tried},
            confidence=confidence,
        )
    if tier < len(templates):
        nxt = templates[tier]
        previous = {"answer": output_of(state, current["role"]), "confidence": confidence}
        agent_step = make_step(nxt, str(nxt["role"]), (step.id,), input={"tier": tier + 1, "previous": previous})
        control = step.model_copy(
            update={
                "id": f"cascade.{tier + 1}",
                "after": (agent_step.id,),
                "control": step.control.model_copy(update={"settings": {**settings, "tier": tier + 1}}),
            }
        )
        return Expansion(
            output={"tier": tier, "confidence": confidence, "escalated_to": agent_step.id},
            confidence=confidence,
            add=[agent_step, control],
            rewire={step.id: [control.id]},
        )
    answered = [t for t in tried if t["status"] == "succeeded"]
    if not answered:
        roles = ", ".join(str(t["role"]) for t in tried)
        return Expansion(error=f"no tier of the cascade produced an answer ({roles})")
    best = max(answered, key=lambda t: (t["confidence"] or 0.0, t["tier"]))
    return Expansion(
        output={"answer": output_of(state, best["role"]), **_pick(best), "accepted": False, "tried": tried},
        confidence=best["confidence"],
    )


def _pick(tier: Mapping[str, Any]) -> dict[str, Any]:
    return {"tier": tier["tier"], "role": tier["role"], "model": tier["model"], "confidence": tier["confidence"]}


# Map-reduce


def _map(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    assert state.plan is not None
    settings = step.control.settings
    over = str(settings["over"])
    limit = int(settings.get("max_items") or 1000)  # type: ignore[arg-type]
    context = {
        "input": state.plan.inputs,
        "steps": {d: {"output": output_of(state, d)} for d in step.after},
    }
    try:
        items = lookup(context, over)
    except TemplateError as e:
        return Expansion(error=f"map over {over}: {e}")
    if not isinstance(items, list):
        return Expansion(error=f"map over {over}: expected a list, found {type(items).__name__}")
    if len(items) > limit:
        return Expansion(error=f"map over {over}: {len(items)} items is more than max_items ({limit})")
    template = step.control.templates[0]
    role = str(template["role"])
    mapped = [
        make_step(template, f"{role}.{i}", (*step.after, step.id), input={"item": item, "index": i})
        for i, item in enumerate(items)
    ]
    rewire = {step.id: [s.id for s in mapped]} if mapped else {}
    return Expansion(output={"items": len(items), "steps": [s.id for s in mapped]}, add=mapped, rewire=rewire)


# Review


def approval_of(verdicts: Mapping[str, Any]) -> float:
    """Confidence-weighted share of reviewers who approve (0 with no verdicts)."""
    total = approve = 0.0
    for verdict in verdicts.values():
        if not isinstance(verdict, Mapping):
            continue
        weight = float(verdict.get("confidence", 1.0) or 0.0)
        total += weight
        if verdict.get("approve") is True:
            approve += weight
    return round(approve / total, 4) if total else 0.0


def _review(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    assert state.plan is not None
    settings = step.control.settings
    k = int(settings["round"])  # type: ignore[arg-type]
    approve_at = float(settings["approve_at"])  # type: ignore[arg-type]
    max_rounds = int(settings["max_rounds"])  # type: ignore[arg-type]
    author_role = str(settings["author"])
    author_id = f"{author_role}.r{k}"
    reviews = {state.plan.step(r).agent_name: output_of(state, r) for r in step.after if succeeded(state, r)}
    missing = [state.plan.step(r).agent_name for r in step.after if not succeeded(state, r)]
    approval = approval_of(reviews)
    if not succeeded(state, author_id):
        return Expansion(error=f"the author ({author_id}) did not produce a draft")
    draft = output_of(state, author_id)
    if approval >= approve_at or k >= max_rounds:
        return Expansion(
            output={
                "draft": draft,
                "approved": approval >= approve_at,
                "approval": approval,
                "rounds": k,
                "reviews": reviews,
                "missing_reviews": missing,
            },
            confidence=approval,
        )
    nxt = k + 1
    templates = {str(t["role"]): t for t in step.control.templates}
    author = make_step(
        templates[author_role],
        f"{author_role}.r{nxt}",
        (step.id,),
        input={"round": nxt, "draft": draft, "reviews": reviews},
    )
    reviewers = [
        make_step(t, f"{role}.r{nxt}", (author.id,), input={"round": nxt})
        for role, t in templates.items()
        if role != author_role
    ]
    control = step.model_copy(
        update={
            "id": f"review.r{nxt}",
            "after": tuple(r.id for r in reviewers),
            "control": step.control.model_copy(update={"settings": {**settings, "round": nxt}}),
        }
    )
    return Expansion(
        output={"round": k, "approval": approval, "revise": True},
        confidence=approval,
        add=[author, *reviewers, control],
        rewire={step.id: [control.id]},
    )


# Org chart


def _orgchart(step: Step, state: RunState) -> Expansion:
    """Distribute a manager's assignments over the instances of the role they assign to:
    clamp(tasks, min, max) instances, tasks dealt round-robin, one instance's tasks in order."""
    assert step.control is not None
    settings = step.control.settings
    assignment = output_of(state, step.after[0]) or {}
    tasks = assignment.get("tasks") if isinstance(assignment, Mapping) else None
    if not isinstance(tasks, list) or not tasks:
        return Expansion(error=f"{step.after[0]} assigned no tasks")
    low, high = int(settings["min"]), int(settings["max"])  # type: ignore[arg-type]
    instances = max(low, min(high, len(tasks)))
    template = step.control.templates[0]
    role = str(template["role"])
    added: list[Step] = []
    last: dict[int, str] = {}
    for i, task in enumerate(tasks):
        k = i % instances + 1
        prior = (last[k],) if k in last else (*step.after, step.id)
        worker = make_step(template, f"{role}.{k}.t{i + 1}", prior, input={"task": task, "instance": k})
        added.append(worker)
        last[k] = worker.id
    return Expansion(
        output={"tasks": len(tasks), "instances": instances, "steps": [s.id for s in added]},
        add=added,
        rewire={step.id: sorted(last.values())},
    )


def _escalate(step: Step, state: RunState) -> Expansion:
    """A verdict stands when it approves confidently enough; otherwise the question goes to the
    judge's manager (`reports_to`), up to `max_depth` levels, and then to a person (an approval
    gate; rejecting it fails the run)."""
    assert step.control is not None
    settings = step.control.settings
    verdict_id = step.after[0]
    verdict = output_of(state, verdict_id)
    depth = int(settings.get("depth", 0) or 0)  # type: ignore[arg-type]
    below = float(settings["below"])  # type: ignore[arg-type]
    chain: list[str] = list(settings["chain"])  # type: ignore[arg-type]  # the judge, their manager, theirs...
    if isinstance(verdict, Mapping) and verdict.get("approve") is True and float(verdict.get("confidence", 1)) >= below:
        return Expansion(
            output={"approved": True, "by": chain[depth], "depth": depth}, confidence=verdict.get("confidence")
        )
    reason = (
        "; ".join(verdict.get("comments", [])) or "not approved"
        if isinstance(verdict, Mapping)
        else f"{verdict_id} did not answer"
    )
    stage = str(settings["stage"])
    max_depth = int(settings["max_depth"])  # type: ignore[arg-type]
    templates = {str(t["role"]): t for t in step.control.templates}
    judged = state.plan.step(verdict_id) if state.plan else None
    work = judged.input.get("work") if judged is not None and "work" in judged.input else None
    if work is None and judged is not None:
        work = [output_of(state, d) for d in judged.after if succeeded(state, d)]
    if depth + 1 < len(chain) and depth < max_depth and chain[depth + 1] in templates:
        manager = chain[depth + 1]
        judge = make_step(
            templates[manager],
            f"{stage}.escalated.{depth + 1}",
            (step.id,),
            input={
                "escalated_from": chain[depth],
                "reason": reason,
                "verdict": verdict,
                "depth": depth + 1,
                "work": work,
            },
        )
        control = step.model_copy(
            update={
                "id": f"{stage}.check.{depth + 1}",
                "after": (judge.id,),
                "control": step.control.model_copy(update={"settings": {**settings, "depth": depth + 1}}),
            }
        )
        return Expansion(
            output={"approved": False, "escalated_to": manager, "reason": reason, "depth": depth},
            add=[judge, control],
            rewire={step.id: [control.id]},
        )
    gate = Step(
        id=f"{stage}.user",
        kind="gate",
        after=(step.id,),
        gate=GateSpec(
            kind="approval",
            prompt=f"escalated past {chain[depth]} ({reason}); approve to continue, reject to stop the run",
            timeout_s=float(settings["user_timeout_s"]) if settings.get("user_timeout_s") else None,  # type: ignore[arg-type]
        ),
    )
    return Expansion(
        output={"approved": False, "escalated_to": "user", "reason": reason, "depth": depth},
        add=[gate],
        rewire={step.id: [gate.id]},
    )


def cohort_stream(run_id: str, cohort: str) -> str:
    return RunStreams(run_id).cohort(cohort)


_CONTROLLERS: dict[str, Callable[[Step, RunState], Expansion]] = {
    "consensus": _consensus,
    "cascade": _cascade,
    "map": _map,
    "review": _review,
    "moderate": moderate,
    "orgchart": _orgchart,
    "escalate": _escalate,
}
