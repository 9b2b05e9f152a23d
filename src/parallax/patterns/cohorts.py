"""Compiling the two patterns built from roles and streams: cohorts with a moderator, and the
org chart. Both compile their first moves statically and leave the rest to a control step
(`core/expand.py`), so the run's graph grows on the log and resumes exactly.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from parallax.core import actions
from parallax.core.plan import ControlSpec, Step
from parallax.core.runstreams import RunStreams
from parallax.patterns.compile import Compiler

COHORT_PROMPT = """{{input.question}}

You are {{cohort.name}}'s member, phase "{{input.phase}}", round {{input.round}}. {{input.phase_prompt}}
{{input.brief}}
Your cohort's discussion so far (you cannot see the other cohorts):
{{cohort.transcript}}

From the moderator: {{input.steer}}
Messages for you: {{inbox}}

Give your position, your reasoning, your confidence (0 to 1), and your stance: your answer in one
to three words (yes / no / depends, or the option you choose)."""

MODERATOR_PROMPT = """{{input.question}}

You moderate phase "{{input.phase}}", round {{input.round}}. Each cohort works in isolation; here is
what each has said:
{{cohorts}}

Messages for you: {{inbox}}

Decide the next actions: continue, steer (to a cohort or all), breakout, fork, merge, rewire,
start_phase, stop, wrap_up or conclude."""

SYNTHESIS_PROMPT = """{{input.question}}

Write the synthesis of this discussion: where the cohorts agree, where they disagree, and what
you recommend.
{{cohorts}}"""

ESCALATION_PROMPT = """{{input.escalated_from}} could not sign this off ({{input.reason}}).
Decide as their manager: approve, or not, with your confidence and comments.

The work:
{{input.work}}"""

_ORG_KEYS = ("reports_to", "instances")
# What of `moderator:` describes the agent that moderates (the rest is cadence and limits).
_AGENT_KEYS = ("kind", "model", "base_url", "instructions", "prompt", "timeout_s", "role", "ref", "command", "preset",
               "env", "settings")  # fmt: skip


def compile_cohorts(c: Compiler) -> list[Step]:
    data = c.data
    if "cohorts" not in data or "moderator" not in data:
        raise c.error((), "a cohorts pattern needs `cohorts` and a `moderator`")
    moderator = data["moderator"]
    phases = moderator["phases"]
    owner: dict[str, str] = {}
    for cohort, spec in data["cohorts"].items():
        for agent in spec["agents"]:
            if agent in owner or agent in ("moderator", "synthesis"):
                where = f"already in cohort {owner[agent]}" if agent in owner else "a reserved name"
                raise c.error(("cohorts", cohort, "agents", agent), f"agent names must be unique: {agent!r} is {where}")
            owner[agent] = cohort
    needs_question = (
        any("prompt" not in a for spec in data["cohorts"].values() for a in spec["agents"].values())
        or "prompt" not in moderator
    )
    if needs_question and "question" not in data.get("inputs", {}):
        raise c.error(("inputs",), "the default prompts use {{input.question}}: set inputs.question (or --input)")
    contribution = actions.ref(actions.Contribution)
    first_phase = {"round": 1, "phase": phases[0]["name"], "phase_prompt": phases[0].get("prompt", "")}
    turns: list[Step] = []
    templates: list[dict[str, Any]] = []
    names = RunStreams.template()
    for cohort, spec in data["cohorts"].items():
        for name, agent in spec["agents"].items():
            path = ("cohorts", cohort, "agents", name)
            template = c.agent_step(
                name, agent, path, role=name, default_output=contribution, default_prompt=COHORT_PROMPT
            )
            if moderator.get("turn_timeout_s") and "timeout_s" not in agent:
                template = template.model_copy(update={"timeout_s": moderator["turn_timeout_s"]})
            templates.append(_template(template))
            turns.append(
                Step.model_validate(
                    {
                        **template.model_dump(mode="python", by_alias=True),
                        "id": f"{cohort}.{name}.1",
                        "cohort": cohort,
                        "publish": names.cohort(cohort),
                        "reads": (
                            *template.reads,
                            RunStreams.template().inbox(cohort),
                            RunStreams.template().inbox(name),
                        ),
                        "input": {**first_phase, "steer": "(none)", "brief": spec.get("brief", "")},
                    }
                )
            )
    mod_agent = {k: v for k, v in moderator.items() if k in _AGENT_KEYS}
    mod = c.agent_step(
        "moderator", mod_agent, ("moderator",), role="moderator",
        default_output=actions.ref(actions.ModeratorDecision), default_prompt=MODERATOR_PROMPT,
    )  # fmt: skip
    mod = mod.model_copy(update={"reads": ("runs/{run}/cohorts/", "runs/{run}/inbox/moderator")})
    synth_spec = data.get("synthesis", {})
    synth_agent = {"model": moderator.get("model"), "instructions": moderator.get("instructions")}
    synth_agent = {k: v for k, v in synth_agent.items() if v is not None}
    synth_agent.update({k: v for k, v in synth_spec.items() if k in ("model", "instructions", "prompt", "output")})
    synthesis = c.agent_step(
        "synthesis", synth_agent, ("synthesis",), role="synthesis",
        default_output=actions.ref(actions.Synthesis), default_prompt=SYNTHESIS_PROMPT,
    )  # fmt: skip
    synthesis = synthesis.model_copy(update={"reads": ("runs/{run}/cohorts/",)})
    rounds_per_phase = moderator.get("rounds_per_phase", 2)
    control = Step(
        id="round.1",
        kind="control",
        after=tuple(t.id for t in turns),
        control=ControlSpec(
            kind="moderate",
            settings={
                "stage": "round",
                "round": 1,
                "cohorts": {cohort: list(spec["agents"]) for cohort, spec in data["cohorts"].items()},
                "phases": [{"name": p["name"], "prompt": p.get("prompt", "")} for p in phases],
                "rounds_per_phase": rounds_per_phase,
                "max_rounds": moderator.get("max_rounds", len(phases) * rounds_per_phase),
                "cadence": moderator.get("cadence", 1),
                "max_messages": moderator.get("max_messages"),
                "pool": list(owner),
            },
            templates=(*templates, _template(mod), _template(synthesis)),
        ),
    )
    return [*turns, control]


def _instances(role: dict[str, Any]) -> tuple[int, int]:
    """(min, max) instances of a role: a singleton by default."""
    instances = role.get("instances", 1)
    if isinstance(instances, int):
        return instances, instances
    return int(instances.get("min", 1)), int(instances["max"])


def _template(step: Step) -> dict[str, Any]:
    return step.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"after"})


def compile_orgchart(c: Compiler) -> list[Step]:
    data = c.data
    roles: dict[str, dict[str, Any]] = data.get("roles", {})
    if not roles or "workflow" not in data:
        raise c.error((), "an orgchart pattern needs `roles` and a `workflow`")
    for name, position in roles.items():
        boss = position.get("reports_to")
        if boss is not None and boss not in roles:
            raise c.error(("roles", name, "reports_to"), f"unknown role {boss!r} (roles: {', '.join(roles)})")
        seen = [name]
        while boss is not None:
            if boss in seen:
                raise c.error(
                    ("roles", name, "reports_to"), f"the reporting lines form a cycle: {' -> '.join([*seen, boss])}"
                )
            seen.append(boss)
            boss = roles[boss].get("reports_to")
        low, high = _instances(position)
        if low > high:
            raise c.error(("roles", name, "instances"), f"min ({low}) is more than max ({high})")
    escalation = data.get("escalation", {})
    assigned: dict[str, int] = {}  # role -> the workflow stage that assigns it work
    steps: list[Step] = []
    exits: tuple[str, ...] = ()
    work: tuple[str, ...] = ()

    def need(role: str | None, path: tuple[str | int, ...]) -> str:
        if role not in roles:
            raise c.error(path, f"unknown role {role!r} (roles: {', '.join(roles)})")
        return role

    def agent_of(role: str) -> dict[str, Any]:
        return {k: v for k, v in roles[role].items() if k not in _ORG_KEYS}

    def chain(role: str) -> list[str]:
        out = [role]
        while roles[out[-1]].get("reports_to"):
            out.append(roles[out[-1]]["reports_to"])
        return out

    for i, stage in enumerate(data["workflow"], start=1):
        ((kind, spec),) = stage.items()
        path: tuple[str | int, ...] = ("workflow", i - 1, kind)
        if kind == "assign":
            boss, to = need(spec["from"], (*path, "from")), need(spec["to"], (*path, "to"))
            if to in assigned:
                raise c.error(
                    (*path, "to"),
                    f"{to!r} is already assigned work at workflow.{assigned[to]}; one assign stage per role "
                    f"(the tasks of both would be steps {to}.1.t1, {to}.1.t2, ...)",
                )
            assigned[to] = i - 1
            low, high = _instances(roles[to])
            prompt = spec.get(
                "prompt",
                f"Split the work into tasks for your {to} reports (at most {high} at once).\n"
                "{{input}}\nWork so far: {{upstream}}",
            )
            assign = c.agent_step(
                f"assign.{i}",
                {**agent_of(boss), "prompt": prompt},
                (*path, "from"),
                after=exits,
                role=boss,
                default_output=actions.ref(actions.Assignments),
            )
            worker = c.agent_step(
                f"{to}.0", {**agent_of(to), "prompt": spec.get("work", "Do this task: {{input.task}}\n\n{{input}}")},
                (*path, "to"), role=to,
            )  # fmt: skip
            distribute = Step(
                id=f"distribute.{i}",
                kind="control",
                after=(assign.id,),
                control=ControlSpec(
                    kind="orgchart", settings={"min": low, "max": high}, templates=(_template(worker),)
                ),
            )
            steps += [assign, distribute]
            exits = work = (distribute.id,)
        elif kind == "parallel":
            role = need(spec["role"], (*path, "role"))
            count = _instances(roles[role])[1]
            prompt = spec.get("prompt", "{{input}}\nWork so far: {{upstream}}")
            group = [
                c.agent_step(f"{role}.{k}", {**agent_of(role), "prompt": prompt}, (*path, "role"), after=exits,
                             role=role, input={"instance": k})
                for k in range(1, count + 1)
            ]  # fmt: skip
            steps += group
            exits = work = tuple(s.id for s in group)
        elif kind in ("review", "approve"):
            judge = need(spec["by"], (*path, "by"))
            verb = "Review" if kind == "review" else "Approve or reject"
            prompt = spec.get(
                "prompt",
                f"{verb} this work; say approve true or false, with your confidence and comments.\n{{{{upstream}}}}",
            )
            verdict = c.agent_step(
                f"{kind}.{i}",
                {**agent_of(judge), "prompt": prompt},
                (*path, "by"),
                after=exits,
                role=judge,
                default_output=actions.ref(actions.Verdict),
            )
            managers = [
                _template(c.agent_step(r, {**agent_of(r), "prompt": ESCALATION_PROMPT}, ("roles", r), role=r,
                                       default_output=actions.ref(actions.Verdict)))
                for r in chain(judge)[1:]
            ]  # fmt: skip
            chain_of_judge: list[JsonValue] = list(chain(judge))
            check = Step(
                id=f"{kind}.{i}.check.0",
                kind="control",
                after=(verdict.id,),
                control=ControlSpec(
                    kind="escalate",
                    settings={
                        "stage": f"{kind}.{i}",
                        "chain": chain_of_judge,
                        "depth": 0,
                        "below": escalation.get("below", 0.5),
                        "max_depth": escalation.get("max_depth", 2),
                        "user_timeout_s": escalation.get("user_timeout_s"),
                    },
                    templates=tuple(managers),
                ),
            )
            steps += [verdict, check]
            exits = (check.id, *work)
        else:  # aggregate
            by = need(spec["by"], (*path, "by"))
            prompt = spec.get("prompt", "Combine the work into one result:\n{{upstream}}")
            fields = {**agent_of(by), "prompt": prompt}
            if "output" in spec:
                fields["output"] = spec["output"]
            aggregate = c.agent_step(f"aggregate.{i}", fields, (*path, "by"), after=exits, role=by)
            steps.append(aggregate)
            exits = (aggregate.id,)
    return steps
