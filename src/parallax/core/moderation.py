"""The moderator's controller: rounds, phases, the moderator's typed actions and people's
topology requests, and the synthesis. Its session (phase, rounds, active cohorts, members,
grants, counters, pending steering) is snapshotted with every decision, so a resumed run goes on
from the same state. Pure, like every controller (see `core/expand.py`), and built on
the same shared parts (`core/expansion.py`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue, ValidationError

from parallax.core.actions import (
    ACTION_MODELS,
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
from parallax.core.expansion import Expansion, make_step, output_of, succeeded, text_of
from parallax.core.plan import Step
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState


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


def moderate(step: Step, state: RunState) -> Expansion:
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
            if spec.cohort and succeeded(state, turn):
                session["messages"][spec.cohort] = session["messages"].get(spec.cohort, 0) + 1
    actions: list[Any] = []
    for seq, request in state.pending_requests:
        actions.append((f"request {seq} by {request.get('by', '?')}", request.get("action"), seq))
    if stage == "decide":
        decision = output_of(state, step.after[0])
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
            reads = [RunStreams.template().cohort(other) for other in session["reads"].get(cohort, [])]
            turns.append(
                make_step(
                    template,
                    f"{cohort}.{role}.{nxt}",
                    (step.id,),
                    cohort=cohort,
                    publish=RunStreams.template().cohort(cohort),
                    reads=[*reads, RunStreams.template().inbox(cohort), RunStreams.template().inbox(role)],
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


def _latest_outputs(state: RunState, cohorts: list[str] | None = None) -> dict[str, list[Any]]:
    """Each cohort's latest round of turns, as the outputs its members recorded."""
    if state.plan is None:
        return {}
    latest: dict[str, tuple[int, list[Any]]] = {}
    for spec in state.plan.steps:
        if not spec.cohort or not succeeded(state, spec.id) or (cohorts is not None and spec.cohort not in cohorts):
            continue
        n = int(spec.input.get("round", 0) or 0)  # type: ignore[arg-type]
        best = latest.get(spec.cohort)
        output = output_of(state, spec.id)
        if best is None or n > best[0]:
            latest[spec.cohort] = (n, [output])
        elif n == best[0]:
            best[1].append(output)
    return {c: outputs for c, (_, outputs) in sorted(latest.items())}


def latest_positions(state: RunState, cohorts: list[str] | None = None) -> dict[str, str]:
    """Each cohort's latest round of turns, as one text (what a merge compares for conflicts)."""
    return {c: " ".join(text_of(o) for o in outputs) for c, outputs in _latest_outputs(state, cohorts).items()}


def latest_conclusions(state: RunState, cohorts: list[str] | None = None) -> dict[str, list[str]]:
    """Each cohort's latest round of turns, one text per member (what the divergence measure reads)."""
    return {c: [text_of(o) for o in outputs] for c, outputs in _latest_outputs(state, cohorts).items()}


def latest_stances(state: RunState, cohorts: list[str] | None = None) -> dict[str, list[str]]:
    """Each cohort's latest round of stances (a `Contribution`'s optional `stance`); a cohort whose
    members gave none is left out, and the divergence measure falls back to their text."""
    stances = {
        c: [o["stance"] for o in outputs if isinstance(o, Mapping) and isinstance(o.get("stance"), str) and o["stance"]]
        for c, outputs in _latest_outputs(state, cohorts).items()
    }
    return {c: s for c, s in stances.items() if s}


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
    out.divergence = divergence(latest_conclusions(state), latest_stances(state))
    out.output = {"round": n, "concluded": True, "divergence": out.divergence["divergence"]}
    out.session = session
    return out
