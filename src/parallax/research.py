"""Ask a question in one command: `parallax research "QUESTION"`.

A research run is a cohorts pattern (`patterns/cohorts.py`) whose method was designed for the
question: how many cohorts and members, each cohort's lens, the phases (independent positions,
Delphi rounds on anonymised summaries, a debate, a red team), the moderator's cadence and
stopping rule, and the synthesis' format. With a model, a designer agent (an llm step with a
typed `ResearchDesign` output, run and recorded like any other) designs it; the command's flags
then fix whatever they name. Without one, a built-in method is chosen from the question's form
(`builtin_design`) and every agent answers from scripted answers written for the purpose
(`offline_answers`): the run shows the method, not an answer, and says so.

`to_pattern` turns a design into the YAML document `parallax run` accepts unchanged
(`--plan-only` prints it).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

Method = Literal["panel", "delphi", "debate", "redteam"]
METHODS: tuple[Method, ...] = ("panel", "delphi", "debate", "redteam")
_NAME = r"^[a-z][a-z0-9-]{0,30}$"


class CohortDesign(BaseModel):
    name: Annotated[str, Field(pattern=_NAME, description="lower-case, a few letters or words joined by -")]
    lens: str = Field(description="the stance or lens this cohort argues from, in one sentence")
    agents: Annotated[int, Field(ge=1, le=6)] = 2


class PhaseDesign(BaseModel):
    name: Annotated[str, Field(pattern=_NAME)]
    prompt: str = Field(description="what every member does in this phase")


class ResearchDesign(BaseModel):
    """How to research one question with isolated cohorts and a moderator."""

    method: Method
    rationale: str = Field(default="", description="why this method suits the question, in one or two sentences")
    cohorts: Annotated[list[CohortDesign], Field(min_length=2, max_length=8)]
    phases: Annotated[list[PhaseDesign], Field(min_length=1, max_length=6)]
    rounds_per_phase: Annotated[int, Field(ge=1, le=5)] = 1
    max_rounds: Annotated[int, Field(ge=1, le=20)] | None = None
    moderator: str = Field(description="the moderator's brief: what to steer towards and when to conclude")
    synthesis: str = Field(description="what the synthesis must contain")


# The built-in methods: cohorts' lenses (the first N are used), phases, and the moderator's brief.
_LENSES: dict[Method, list[tuple[str, str]]] = {
    "panel": [
        ("evidence", "what the evidence shows, and how strong it is"),
        ("risks", "what could go wrong, and how badly"),
        ("costs", "what it costs, in money, time and attention"),
        ("people", "who is affected, and how they will respond"),
        ("long-term", "where this leads in five years"),
        ("alternatives", "what else could be done instead"),
    ],
    "delphi": [
        ("practitioners", "hands-on experience of doing this"),
        ("researchers", "the published evidence and base rates"),
        ("economists", "incentives, costs and second-order effects"),
        ("sceptics", "why the consensus estimate is probably wrong"),
        ("regulators", "rules, liability and public interest"),
        ("users", "the people who live with the outcome"),
    ],
    "debate": [
        ("for", "the strongest case for yes"),
        ("against", "the strongest case for no"),
        ("conditional", "the conditions under which the answer changes"),
        ("sceptic", "what both sides take for granted"),
    ],
    "redteam": [
        ("proposers", "the best plan you can make"),
        ("red-team", "every way the plan fails or can be attacked"),
        ("defenders", "how the plan survives the attacks"),
        ("judges", "which attacks matter and which do not"),
    ],
}
_PHASES: dict[Method, list[tuple[str, str]]] = {
    "panel": [
        ("positions", "State your position and the evidence that would change your mind."),
        ("convergence", "Take the moderator's notes into account: revise your position or defend it."),
    ],
    "delphi": [
        ("estimate", "Give your independent answer, with your reasoning and confidence."),
        ("revise", "Read the moderator's anonymised summary of all answers; revise yours or say why not."),
    ],
    "debate": [
        ("opening", "Make your case."),
        ("rebuttal", "Answer the strongest objection the moderator passed on."),
        ("closing", "Restate your position in its strongest, narrowest form."),
    ],
    "redteam": [
        ("propose", "Propose, attack or defend, as your lens says."),
        ("attack", "Go after the weakest point the moderator named."),
        ("settle", "Say what survives, and what must change."),
    ],
}
_MODERATOR: dict[Method, str] = {
    "panel": "Keep the cohorts apart; push each to its strongest case; conclude when positions are stable.",
    "delphi": "After each round, steer all cohorts with an anonymised summary of the answers (no names); "
    "conclude when the answers stop moving.",
    "debate": "Pass each side the other's strongest point; stop when no new argument appears.",
    "redteam": "Route each attack to the proposers; conclude when the remaining attacks are understood.",
}
_SYNTHESIS = (
    "Write the answer to the question: a summary a busy person can act on, where the cohorts agree, "
    "where they disagree (and why), and your recommendation with its confidence."
)


def choose_method(question: str) -> Method:
    """The built-in method for a question's form: yes/no questions are debated, quantities and
    forecasts go to a Delphi panel, attacks and failure to a red team, the rest to a panel."""
    q = question.strip().lower()
    if re.search(r"\b(how (many|much|long|likely)|when will|what year|probability|forecast|estimate)\b", q):
        return "delphi"
    if re.search(r"\b(attack|secure|security|exploit|fail|failure|break|threat|risk of)\b", q):
        return "redteam"
    if re.match(r"(should|is|are|will|can|could|would|do|does|must)\b", q):
        return "debate"
    return "panel"


def builtin_design(
    question: str,
    *,
    method: Method | None = None,
    cohorts: int | None = None,
    agents_per_cohort: int | None = None,
    max_rounds: int | None = None,
) -> ResearchDesign:
    """The deterministic design: the method for the question's form, its lenses and phases."""
    chosen = method or choose_method(question)
    lenses = _LENSES[chosen]
    count = max(2, min(cohorts or (2 if chosen == "debate" else 3), len(lenses)))
    phases = [PhaseDesign(name=n, prompt=p) for n, p in _PHASES[chosen]]
    return ResearchDesign(
        method=chosen,
        rationale=f"built-in {chosen} method for a question of this form",
        cohorts=[CohortDesign(name=n, lens=lens, agents=agents_per_cohort or 2) for n, lens in lenses[:count]],
        phases=phases,
        rounds_per_phase=1,
        max_rounds=max_rounds,
        moderator=_MODERATOR[chosen],
        synthesis=_SYNTHESIS,
    )


def with_flags(
    design: ResearchDesign,
    *,
    method: Method | None = None,
    cohorts: int | None = None,
    agents_per_cohort: int | None = None,
    max_rounds: int | None = None,
) -> ResearchDesign:
    """The design with what the command's flags fix: a method replaces the designed phases and
    lenses with the built-in ones; a cohort count trims or extends the cohorts (from the
    method's lenses); members per cohort and the round limit are set as given."""
    if method is not None and method != design.method:
        fixed = builtin_design("", method=method, cohorts=cohorts or len(design.cohorts))
        design = design.model_copy(
            update={"method": method, "cohorts": fixed.cohorts, "phases": fixed.phases, "moderator": fixed.moderator}
        )
    chosen = list(design.cohorts)
    if cohorts is not None:
        spare = [
            CohortDesign(name=n, lens=lens) for n, lens in _LENSES[design.method] if n not in {c.name for c in chosen}
        ]
        chosen = (chosen + spare)[:cohorts]
        while len(chosen) < cohorts:  # more than the method has lenses: numbered panels
            chosen.append(CohortDesign(name=f"panel-{len(chosen) + 1}", lens="an independent view"))
    if agents_per_cohort is not None:
        chosen = [c.model_copy(update={"agents": agents_per_cohort}) for c in chosen]
    update: dict[str, Any] = {"cohorts": chosen}
    if max_rounds is not None:
        update["max_rounds"] = max_rounds
    return ResearchDesign.model_validate({**design.model_dump(), **update})


def member_names(design: ResearchDesign) -> list[tuple[str, str]]:
    """(cohort, member) for every member, in order: `<cohort>-1`, `<cohort>-2`, ..."""
    return [(c.name, f"{c.name}-{i}") for c in design.cohorts for i in range(1, c.agents + 1)]


def to_pattern(
    question: str, design: ResearchDesign, *, members: list[str] | None = None, model: str | None = None
) -> dict[str, Any]:
    """The cohorts pattern (as the YAML document `parallax run` reads) for a design. `members`
    cycles over agent kinds for the cohort members: "llm", or a coding-agent CLI preset
    (claude, codex, aider, opencode, gemini); `model`, when given, is the pattern's `model:`."""
    kinds = members or ["llm"]
    cohorts: dict[str, Any] = {}
    for index, (cohort, member) in enumerate(member_names(design)):
        kind = kinds[index % len(kinds)]
        spec: dict[str, Any] = {} if kind == "llm" else {"kind": "cli", "preset": kind}
        lens = next(c.lens for c in design.cohorts if c.name == cohort)
        cohorts.setdefault(cohort, {"brief": f"Your lens: {lens}.", "agents": {}})["agents"][member] = spec
    moderator: dict[str, Any] = {
        "instructions": design.moderator,
        "phases": [{"name": p.name, "prompt": p.prompt} for p in design.phases],
        "rounds_per_phase": design.rounds_per_phase,
    }
    if design.max_rounds is not None:
        moderator["max_rounds"] = design.max_rounds
    pattern: dict[str, Any] = {
        "pattern": "cohorts",
        "name": "research",
        "inputs": {"question": question},
    }
    if model:
        pattern["model"] = model
    pattern.update({"cohorts": cohorts, "moderator": moderator, "synthesis": {"instructions": design.synthesis}})
    return pattern


DESIGN_PROMPT = """Design how a panel of isolated cohorts of AI agents, with a moderator, should research this question:

{{input.question}}

Choose the method (panel: independent lenses then convergence; delphi: independent answers revised
over rounds on anonymised summaries, for estimates and forecasts; debate: for/against, for yes-or-no
questions; redteam: propose, attack, defend, for plans and security), the cohorts (2 to 8, each with
a distinct lens), members per cohort (1 to 6), the phases, rounds per phase, an upper bound on rounds,
the moderator's brief (cadence and when to conclude), and what the synthesis must contain.
{{input.constraints}}"""


def design_pattern(question: str, constraints: str) -> dict[str, Any]:
    """A one-step pattern whose llm agent (`designer`) designs the method."""
    return {
        "pattern": "pipeline",
        "name": "research-design",
        "inputs": {"question": question, "constraints": constraints},
        "agents": {"designer": {"prompt": DESIGN_PROMPT, "output": "parallax.research:ResearchDesign"}},
    }


OFFLINE_NOTE = (
    "offline: no model is configured, so a built-in method runs on scripted answers "
    "(it shows the method, not an answer)"
)


_OFFLINE_STANCES = {"for": "yes", "against": "no", "conditional": "depends", "sceptic": "depends"}


def offline_answers(question: str, design: ResearchDesign) -> dict[str, Any]:
    """Scripted answers for every agent of the design (ScriptedModel's file format: agent name ->
    answers in call order). Written for the purpose: they show the method's shape, never claim
    to answer the question."""
    rounds = design.max_rounds or len(design.phases) * design.rounds_per_phase
    answers: dict[str, Any] = {}
    for cohort, member in member_names(design):
        lens = next(c.lens for c in design.cohorts if c.name == cohort)
        answers[member] = [
            {
                "position": f"(offline example) Seen through {lens}, round {r}: a placeholder position.",
                "reasoning": f"{member} argues from {lens}; a configured model would argue it for real.",
                "confidence": round(0.5 + 0.05 * min(r, 8), 2),
                "stance": _OFFLINE_STANCES.get(cohort, cohort),
            }
            for r in range(1, rounds + 1)
        ]
    answers["moderator"] = [
        {
            "reasoning": "(offline example) the cohorts' positions, summarised without names.",
            "actions": [
                {"action": "steer", "to": "all", "text": "(offline example) an anonymised summary of this round."},
                {"action": "continue"},
            ],
        }
    ]
    answers["synthesis"] = [
        {
            "summary": f"Offline run, no model configured: this shows the {design.method} method on "
            f"{len(design.cohorts)} cohorts, not an answer to: {question}",
            "agreements": ["(offline example) where the cohorts would agree"],
            "disagreements": ["(offline example) where they would differ, and why"],
            "recommendation": "Set a model (--model, PARALLAX_MODEL or a provider key) and ask again.",
            "confidence": 0.0,
        }
    ]
    return answers
