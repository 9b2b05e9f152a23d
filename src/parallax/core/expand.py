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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue, ValidationError

from parallax.core.actions import (
    Breakout,
    Conclude,
    Fork,
    Merge,
    ModeratorDecision,
    Rewire,
    StartPhase,
    Steer,
    Stop,
    WrapUp,
)
from parallax.core.conflicts import Conflict
from parallax.core.divergence import divergence
from parallax.core.errors import TemplateError
from parallax.core.plan import GateSpec, Step
from parallax.core.state import RunState
from parallax.core.template import lookup


@dataclass
class Expansion:
    output: Any = None
    confidence: float | None = None
    add: list[Step] = field(default_factory=list[Step])
    rewire: dict[str, list[str]] = field(default_factory=dict[str, list[str]])
    session: dict[str, Any] | None = None
    applied: dict[int, str] = field(default_factory=dict[int, str])  # topology request seq -> outcome
    conflicts: list[Conflict] = field(default_factory=list[Conflict])
    forks: list[tuple[str, str, int | None]] = field(default_factory=list[tuple[str, str, int | None]])
    merges: list[tuple[list[str], str]] = field(default_factory=list[tuple[list[str], str]])
    divergence: dict[str, Any] | None = None
    error: str | None = None


def expand(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    return _CONTROLLERS[step.control.kind](step, state)


def make_step(template: Mapping[str, Any], step_id: str, after: tuple[str, ...], **updates: Any) -> Step:
    data = dict(template)
    data.update(updates)
    data["id"] = step_id
    data["after"] = list(after)
    data.setdefault("role", template.get("role") or template.get("id"))
    return Step.model_validate(data)


def _output(state: RunState, step_id: str) -> Any:
    return state.steps[step_id].output if step_id in state.steps else None


def _ok(state: RunState, step_id: str) -> bool:
    return step_id in state.steps and state.steps[step_id].status == "succeeded"


def text_of(output: Any) -> str:
    """A contribution as prose, for transcripts and the divergence measure."""
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("position", "summary", "text", "answer"):
            if isinstance(output.get(key), str):
                extra = output.get("reasoning") if key == "position" else output.get("recommendation")
                return str(output[key]) + (f" ({extra})" if isinstance(extra, str) and extra else "")
    return json.dumps(output, sort_keys=True, ensure_ascii=False, default=str)


# Consensus


def _consensus(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    settings = step.control.settings
    k = int(settings["round"])  # type: ignore[arg-type]
    threshold = float(settings["threshold"])  # type: ignore[arg-type]
    max_rounds = int(settings["max_rounds"])  # type: ignore[arg-type]
    vote_id = step.after[0]
    vote = (_output(state, vote_id) or {}).get("document") or {}
    agreement = float(vote.get("agreement") or 0.0)
    history = [
        {"round": j, **{k2: v for k2, v in (_output(state, f"consensus.r{j}") or {}).items() if k2 != "history"}}
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
    previous = {state.plan.step(v).agent_name: _output(state, v) for v in voters if _ok(state, v)} if state.plan else {}
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
            output={"answer": _output(state, current["role"]), **_pick(current), "accepted": True, "tried": tried},
            confidence=confidence,
        )
    if tier < len(templates):
        nxt = templates[tier]
        previous = {"answer": _output(state, current["role"]), "confidence": confidence}
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
        output={"answer": _output(state, best["role"]), **_pick(best), "accepted": False, "tried": tried},
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
        "steps": {d: {"output": _output(state, d)} for d in step.after},
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
    reviews = {state.plan.step(r).agent_name: _output(state, r) for r in step.after if _ok(state, r)}
    missing = [state.plan.step(r).agent_name for r in step.after if not _ok(state, r)]
    approval = approval_of(reviews)
    if not _ok(state, author_id):
        return Expansion(error=f"the author ({author_id}) did not produce a draft")
    draft = _output(state, author_id)
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
    assignment = _output(state, step.after[0]) or {}
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
    verdict = _output(state, verdict_id)
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
        work = [_output(state, d) for d in judged.after if _ok(state, d)]
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


# Cohorts with a moderator


def cohort_stream(run_id: str, cohort: str) -> str:
    return f"runs/{run_id}/cohorts/{cohort}"


def _initial_session(settings: Mapping[str, Any]) -> dict[str, Any]:
    cohorts: dict[str, list[str]] = {c: list(m) for c, m in settings["cohorts"].items()}
    return {
        "name": "moderator",
        "phase": 0,
        "round_in_phase": 0,
        "rounds": 0,
        "active": list(cohorts),
        "members": cohorts,
        "reads": {c: [] for c in cohorts},
        "briefs": {},
        "messages": dict.fromkeys(cohorts, 0),
        "steer": {},
        "final_round": None,
        "concluded": False,
        "log": [],
    }


def _moderate(step: Step, state: RunState) -> Expansion:
    assert step.control is not None
    assert state.plan is not None
    settings = step.control.settings
    session = json.loads(json.dumps(state.sessions.get("moderator") or _initial_session(settings)))
    stage = settings["stage"]
    n = int(settings["round"])  # type: ignore[arg-type]
    out = Expansion()
    if stage == "round":
        session["rounds"] = n
        session["round_in_phase"] += 1
        for turn in step.after:
            spec = state.plan.step(turn)
            if spec.cohort and _ok(state, turn):
                session["messages"][spec.cohort] = session["messages"].get(spec.cohort, 0) + 1
    actions: list[Any] = []
    for seq, request in state.pending_requests:
        actions.append((f"request {seq} by {request.get('by', '?')}", request.get("action"), seq))
    if stage == "decide":
        decision = _output(state, step.after[0])
        if decision is None:
            session["log"].append(f"round {n}: the moderator did not answer; continuing")
        else:
            try:
                parsed = ModeratorDecision.model_validate(decision)
            except ValidationError as e:
                parsed = ModeratorDecision()
                session["log"].append(f"round {n}: moderator decision unreadable ({e.error_count()} errors)")
            actions += [(f"moderator round {n}", a.model_dump(), None) for a in parsed.actions]
    conclude = _apply_actions(actions, session, settings, state, out)
    cadence = int(settings.get("cadence") or 1)  # type: ignore[arg-type]
    phases: list[Mapping[str, Any]] = list(settings["phases"])  # type: ignore[arg-type]
    rounds_per_phase = int(settings["rounds_per_phase"])  # type: ignore[arg-type]
    max_rounds = int(settings.get("max_rounds") or len(phases) * rounds_per_phase)  # type: ignore[arg-type]
    if session["final_round"] is not None and n >= session["final_round"]:
        conclude = True
    if not conclude and stage == "round" and n % cadence == 0:
        template = _template(step, "moderator")
        moderator = make_step(template, f"moderator.{n}", (step.id,), input=_round_input(session, phases, n))
        decide = _control(step, f"decide.{n}", (moderator.id,), stage="decide", round=n)
        out.add += [moderator, decide]
        out.rewire = {step.id: [decide.id]}
        out.output = {"round": n, "phase": _phase_name(session, phases), "moderator": moderator.id}
        out.session = session
        return out
    if not conclude and session["round_in_phase"] >= rounds_per_phase:
        session["phase"] += 1
        session["round_in_phase"] = 0
    if session["phase"] >= len(phases) or n >= max_rounds:
        conclude = True
    limit = settings.get("max_messages")
    ready = [c for c in session["active"] if limit is None or session["messages"].get(c, 0) < int(limit)]  # type: ignore[arg-type]
    if not conclude and not ready:
        session["log"].append(f"round {n}: no cohort may take another turn")
        conclude = True
    if conclude:
        return _conclude(step, state, session, out, n)
    nxt = n + 1
    turns: list[Step] = []
    for cohort in ready:
        steer = [*session["steer"].get(cohort, []), *session["steer"].get("all", [])]
        for role in session["members"][cohort]:
            template = _template(step, role)
            reads = [f"runs/{{run}}/cohorts/{other}" for other in session["reads"].get(cohort, [])]
            turns.append(
                make_step(
                    template,
                    f"{cohort}.{role}.{nxt}",
                    (step.id,),
                    cohort=cohort,
                    publish=f"runs/{{run}}/cohorts/{cohort}",
                    reads=[*reads, f"runs/{{run}}/inbox/{cohort}", f"runs/{{run}}/inbox/{role}"],
                    input={
                        **_round_input(session, phases, nxt),
                        "steer": "\n".join(steer) or "(none)",
                        "brief": session["briefs"].get(cohort, ""),
                    },
                )
            )
    session["steer"] = {}
    control = _control(step, f"round.{nxt}", tuple(t.id for t in turns), stage="round", round=nxt)
    out.add += [*turns, control]
    out.rewire = {step.id: [control.id]}
    out.output = {"round": n, "next_round": nxt, "phase": _phase_name(session, phases), "cohorts": ready}
    out.session = session
    return out


def _round_input(session: Mapping[str, Any], phases: list[Mapping[str, Any]], n: int) -> dict[str, JsonValue]:
    index = min(session["phase"], len(phases) - 1)
    return {"round": n, "phase": phases[index]["name"], "phase_prompt": phases[index].get("prompt", "")}


def _phase_name(session: Mapping[str, Any], phases: list[Mapping[str, Any]]) -> str:
    return str(phases[min(session["phase"], len(phases) - 1)]["name"])


def _template(step: Step, role: str) -> Mapping[str, Any]:
    assert step.control is not None
    for template in step.control.templates:
        if template.get("role") == role:
            return template
    raise KeyError(role)


def _control(step: Step, step_id: str, after: tuple[str, ...], **settings: Any) -> Step:
    assert step.control is not None
    return step.model_copy(
        update={
            "id": step_id,
            "after": after,
            "control": step.control.model_copy(update={"settings": {**step.control.settings, **settings}}),
        }
    )


def _apply_actions(
    actions: list[tuple[str, Any, int | None]],
    session: dict[str, Any],
    settings: Mapping[str, Any],
    state: RunState,
    out: Expansion,
) -> bool:
    """Apply actions in order; returns whether the run should conclude now. Each person's
    request gets an outcome in `out.applied` (what was done, or why it was refused)."""
    from parallax.core.actions import ACTION_MODELS

    conclude = False
    phases: list[Mapping[str, Any]] = list(settings["phases"])
    roles = {r for members in session["members"].values() for r in members} | set(settings.get("pool", []))
    for source, raw, seq in actions:
        try:
            kind = raw.get("action") if isinstance(raw, Mapping) else None
            model = ACTION_MODELS.get(str(kind))
            if model is None:
                raise ValueError(f"unknown action {kind!r} (known: {', '.join(ACTION_MODELS)})")
            action = model.model_validate(raw)
            outcome = _apply_one(action, session, phases, roles, state, out)
            if isinstance(action, Conclude):
                conclude = True
        except (ValueError, ValidationError) as e:
            outcome = f"refused: {e}".splitlines()[0]
        session["log"].append(f"{source}: {outcome}")
        if seq is not None:
            out.applied[seq] = outcome
    return conclude


def _apply_one(
    action: Any,
    session: dict[str, Any],
    phases: list[Mapping[str, Any]],
    roles: set[str],
    state: RunState,
    out: Expansion,
) -> str:
    known = session["members"]
    if isinstance(action, Steer):
        if action.to != "all" and action.to not in known:
            raise ValueError(f"no cohort {action.to!r}")
        session["steer"].setdefault(action.to, []).append(action.text)
        return f"steered {action.to}"
    if isinstance(action, Breakout | Fork | Merge):
        name = action.name if isinstance(action, Breakout) else action.into
        if name in known:
            raise ValueError(f"a cohort named {name!r} already exists")
    if isinstance(action, Breakout):
        unknown = [a for a in action.agents if a not in roles]
        if unknown:
            raise ValueError(f"unknown agents {unknown} (known: {sorted(roles)})")
        bad_reads = [r for r in action.reads if r not in known]
        if bad_reads:
            raise ValueError(f"unknown streams to read {bad_reads}")
        known[action.name] = list(action.agents)
        session["reads"][action.name] = list(action.reads)
        session["briefs"][action.name] = action.prompt
        session["messages"][action.name] = 0
        session["active"].append(action.name)
        return f"opened breakout {action.name} with {', '.join(action.agents)}"
    if isinstance(action, Fork):
        if action.stream not in known:
            raise ValueError(f"no cohort {action.stream!r}")
        known[action.into] = list(known[action.stream])
        session["reads"][action.into] = list(session["reads"].get(action.stream, []))
        session["briefs"][action.into] = session["briefs"].get(action.stream, "")
        session["messages"][action.into] = 0
        session["active"].append(action.into)
        out.forks.append((action.stream, action.into, action.at))
        return f"forked {action.stream} into {action.into}" + (f" at {action.at}" if action.at is not None else "")
    if isinstance(action, Merge):
        missing = [s for s in action.streams if s not in known]
        if missing:
            raise ValueError(f"no cohorts {missing}")
        members: list[str] = []
        for source in action.streams:
            members += [m for m in known[source] if m not in members]
            if source in session["active"]:
                session["active"].remove(source)
        known[action.into] = members
        session["reads"][action.into] = []
        session["messages"][action.into] = 0
        session["active"].append(action.into)
        out.merges.append((list(action.streams), action.into))
        positions = latest_positions(state, action.streams)
        if len({p.strip().casefold() for p in positions.values()}) > 1:
            out.conflicts.append(
                Conflict(
                    kind="disagreement",
                    path=f"cohorts/{action.into}",
                    message=f"merging {', '.join(action.streams)}: their latest positions differ",
                    agents=tuple(positions),
                    values=dict(positions),
                )
            )
        return f"merged {', '.join(action.streams)} into {action.into}"
    if isinstance(action, Rewire):
        if action.cohort not in known:
            raise ValueError(f"no cohort {action.cohort!r}")
        bad = [r for r in action.reads if r not in known or r == action.cohort]
        if bad:
            raise ValueError(f"cannot grant {bad}")
        session["reads"][action.cohort] = list(action.reads)
        return f"{action.cohort} now reads {', '.join(action.reads) or 'no other cohort'}"
    if isinstance(action, StartPhase):
        names = [p["name"] for p in phases]
        if action.phase is not None:
            if action.phase not in names:
                raise ValueError(f"no phase {action.phase!r} (phases: {', '.join(names)})")
            session["phase"] = names.index(action.phase)
        else:
            session["phase"] += 1
        session["round_in_phase"] = 0
        return f"started phase {names[min(session['phase'], len(names) - 1)]}"
    if isinstance(action, Stop):
        if action.stream not in session["active"]:
            raise ValueError(f"no active cohort {action.stream!r}")
        session["active"].remove(action.stream)
        return f"stopped {action.stream}"
    if isinstance(action, WrapUp):
        session["final_round"] = session["rounds"] + 1
        return "wrapping up after one more round"
    if isinstance(action, Conclude):
        return "concluding"
    return "continued"


def latest_positions(state: RunState, cohorts: list[str] | None = None) -> dict[str, str]:
    """Each cohort's latest round of turns, as text (what the divergence measure compares)."""
    if state.plan is None:
        return {}
    latest: dict[str, tuple[int, list[str]]] = {}
    for spec in state.plan.steps:
        if not spec.cohort or not _ok(state, spec.id) or (cohorts is not None and spec.cohort not in cohorts):
            continue
        n = int(spec.input.get("round", 0) or 0)  # type: ignore[arg-type]
        best = latest.get(spec.cohort)
        text = text_of(_output(state, spec.id))
        if best is None or n > best[0]:
            latest[spec.cohort] = (n, [text])
        elif n == best[0]:
            best[1].append(text)
    return {c: " ".join(texts) for c, (_, texts) in sorted(latest.items())}


def _conclude(step: Step, state: RunState, session: dict[str, Any], out: Expansion, n: int) -> Expansion:
    session["concluded"] = True
    template = _template(step, "synthesis")
    synthesis = make_step(
        template,
        "synthesis",
        (step.id,),
        publish="runs/{run}/synthesis",
        input={"rounds": n, "log": session["log"][-20:]},
    )
    out.add.append(synthesis)
    out.rewire = {step.id: [synthesis.id]}
    out.divergence = divergence(latest_positions(state))
    out.output = {"round": n, "concluded": True, "divergence": out.divergence["divergence"]}
    out.session = session
    return out


_CONTROLLERS: dict[str, Callable[[Step, RunState], Expansion]] = {
    "consensus": _consensus,
    "cascade": _cascade,
    "map": _map,
    "review": _review,
    "moderate": _moderate,
    "orgchart": _orgchart,
    "escalate": _escalate,
}
