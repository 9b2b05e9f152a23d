"""An estimate before spending: how many agents, model calls, tokens and dollars a plan will
take, as a range, before its first model call (`parallax run --estimate`).

Pure: it reads the Plan and genai-prices' bundled price table, nothing else (no file, no
network, no model). What it counts, its constants and their reasons, and how the run's default
budget follows from it: docs/estimate.md.

- Calls: every agent step present at the start, plus the steps its control steps may add
  (cohort rounds, moderator turns, the synthesis, consensus and review rounds, cascade tiers,
  mapped items, org-chart tasks and escalations). The low end is what runs if every controller
  stops at its first chance; the high end what its limits allow.
- Tokens per call: the prompt as it will be rendered (instructions, template, inputs, and the
  context that grows with the run: transcripts, previous answers, upstream outputs), at
  `CHARS_PER_TOKEN`; output a default per kind. The range is `LOW_FACTOR` to `HIGH_FACTOR`.
- Cost: genai-prices, priced call by call (a price may depend on a call's own size).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from parallax.core.errors import TemplateError
from parallax.core.expansion import make_step
from parallax.core.plan import Plan, Step
from parallax.core.tasks import TaskGraphSpec
from parallax.core.template import REFERENCE, lookup

# Tokens

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English prose and JSON with current tokenizers
LOW_FACTOR = 0.5  # every token count here is a guess: the range runs from half...
HIGH_FACTOR = 2.0  # ...to twice the central estimate (after the call counts' own range)
CONTRIBUTION_TOKENS = 400  # a typed answer (position, reasoning, confidence, stance): a paragraph and a few fields
TEXT_TOKENS = 600  # an untyped answer (a draft, notes, a plan): prose runs longer without a schema
MODERATOR_TOKENS = 250  # a moderator's decision: a handful of typed actions, a line or two each
SYNTHESIS_TOKENS = 800  # a synthesis: agreement, disagreement and a recommendation over every cohort
SCHEMA_TOKENS = 150  # a typed output goes to the model as a tool definition: its JSON schema
CODER_REQUESTS_PER_ITERATION = 8  # a coder's tool loop: list, read a few files, search, write, verify, answer
CODER_ITERATIONS = 4  # agents/coder.py: `settings.max_iterations` (verify-and-fix turns) defaults to 4
CODER_CONTEXT_TOKENS = 3_000  # each request of the loop re-sends the files read and tool results so far
CODER_OUTPUT_TOKENS = 500  # per coder request: a tool call carrying code, or the final summary
MESSAGE_CHARS = 4_000  # engine/cohorts.py cuts one message of a transcript at 4000 characters
LINE_CHARS = 30  # a transcript line's prefix: "[12] builder-a, round 2: "
SMALL_CHARS = 20  # a short reference: {{run.id}}, {{cohort.name}}, an empty inbox
CONTROL_CHARS = 300  # a control step's output ({{steps.consensus.r1.output}}: winner, votes, rounds)
REASON_CHARS = 200  # why a verdict was escalated (its comments)

MODEL_KINDS = ("llm", "coder")  # agents whose model calls Parallax makes, counts and prices
OFFLINE_PREFIXES = ("scripted", "test", "function")  # models that answer locally: no cost
SELF_HOSTED_PREFIXES = ("openai-compatible", "ollama", "vllm", "llama-cpp")  # priced by whoever runs them
# pydantic-ai's provider prefix -> genai-prices' provider id, where they differ.
PROVIDER_IDS = {
    "openai-chat": "openai",
    "openai-responses": "openai",
    "google-gla": "google",
    "google-vertex": "google",
    "bedrock": "aws",
    "grok": "x-ai",
    "xai": "x-ai",
}

Range = tuple[int, int]
Cost = tuple[float | None, float | None]  # (low, high) in USD; (None, None) when the price is unknown
UNKNOWN_COST: Cost = (None, None)
PriceKind = Literal["known", "offline", "unknown"]


@dataclass(frozen=True)
class StepEstimate:
    """One agent step of the plan, or one a control step may add (`calls[0] == 0`: only the
    high end runs it). `calls` counts model requests (a coder makes several per step; `count`
    steps alike, such as mapped items, share one line); tokens are per request, low and high."""

    step: str
    role: str
    kind: str  # llm, coder or cli
    model: str | None  # None for a cli agent (the tool chooses and prices its model)
    calls: Range
    input_tokens: Range
    output_tokens: Range
    count: Range = (1, 1)


@dataclass(frozen=True)
class ModelEstimate:
    model: str
    price: PriceKind  # known (genai-prices has it), offline (scripted, test: free), unknown
    calls: Range
    input_tokens: Range
    output_tokens: Range
    cost_usd: Cost  # (None, None): unknown price

    def plus(self, other: ModelEstimate) -> ModelEstimate:
        """The same model's calls in two estimates."""
        unknown = self.cost_usd[1] is None or other.cost_usd[1] is None
        return ModelEstimate(
            self.model,
            "unknown" if unknown else self.price,
            _add(self.calls, other.calls),
            _add(self.input_tokens, other.input_tokens),
            _add(self.output_tokens, other.output_tokens),
            UNKNOWN_COST
            if unknown
            else (
                (self.cost_usd[0] or 0.0) + (other.cost_usd[0] or 0.0),
                (self.cost_usd[1] or 0.0) + (other.cost_usd[1] or 0.0),
            ),
        )


@dataclass(frozen=True)
class Estimate:
    plan: str
    agents: int  # distinct agents (roles) that call models, cli agents included
    calls: Range  # model requests (llm and coder; a cli agent's calls are the tool's)
    input_tokens: Range
    output_tokens: Range
    cost_usd: Cost  # of the known-price models; (None, None) when no model has a known price
    models: tuple[ModelEstimate, ...]
    unknown_price: tuple[str, ...]  # models genai-prices does not know: in the calls and tokens, not the cost
    offline: tuple[str, ...]  # scripted / test models: cost 0
    tools: tuple[str, ...]  # cli agent steps ("implement (claude)"): priced by the tool, not counted
    notes: tuple[str, ...]
    steps: tuple[StepEstimate, ...]

    def budget(self, multiple: float = 3.0) -> tuple[int | None, float | None]:
        """(max_tokens, max_cost_usd) for the run's default budget: `multiple` times the high
        end. None where the estimate cannot bound the spending: no tokens or no known cost, or
        any cli agent (the run counts what a coding CLI reports, which is not estimated here)."""
        if not multiple > 0:
            raise ValueError(f"the budget multiple must be positive, not {multiple}")
        if self.tools:
            return None, None
        tokens = self.input_tokens[1] + self.output_tokens[1]
        max_tokens = math.ceil(tokens * multiple) if tokens else None
        cost = self.cost_usd[1] or 0.0
        return max_tokens, (cost * multiple if cost > 0 else None)

    def __add__(self, other: Estimate) -> Estimate:
        """Two plans run one after the other (a design run, then the run it designs)."""
        if not isinstance(other, Estimate):
            return NotImplemented
        merged = {m.model: m for m in self.models}
        for m in other.models:
            merged[m.model] = merged[m.model].plus(m) if m.model in merged else m
        return _estimate(
            f"{self.plan} + {other.plan}",
            self.agents + other.agents,
            list(merged.values()),
            tools=(*self.tools, *other.tools),
            notes=(*self.notes, *other.notes),
            steps=(*self.steps, *other.steps),
        )

    def lines(self) -> list[str]:
        """A short block for people: the totals on one line, then what they leave out."""
        cost = self._cost_text()
        head = (
            f"{self.plan}: {self.agents} agent{'s' if self.agents != 1 else ''}, "
            f"{_span(self.calls)} model call{'s' if self.calls[1] != 1 else ''}, "
            f"~{_span(self.input_tokens, _tokens)} input and ~{_span(self.output_tokens, _tokens)} output tokens, "
            f"{cost}"
        )
        out = [head]
        if len(self.models) > 1:
            for m in self.models:
                priced = _cost_span(m.cost_usd)
                out.append(f"  {m.model}: {_span(m.calls)} calls, {priced}")
        if self.unknown_price:
            out.append(f"  unknown price: {', '.join(self.unknown_price)} (in the calls and tokens, not in the cost)")
        if self.offline:
            out.append(f"  offline: {', '.join(self.offline)} (no cost)")
        if self.tools:
            out.append(
                f"  priced by the tool: {', '.join(self.tools)} (a coding CLI spends its own tokens; not counted here)"
            )
        out += [f"  note: {note}" for note in self.notes]
        return out

    def _cost_text(self) -> str:
        priced = [m.model for m in self.models if m.price != "unknown"]
        which = priced[0] if len(priced) == 1 else f"{len(priced)} models"
        return f"{_cost_span(self.cost_usd)} ({which})" if priced else _cost_span(self.cost_usd)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (`--json`)."""
        return {
            "plan": self.plan,
            "agents": self.agents,
            "calls": list(self.calls),
            "input_tokens": list(self.input_tokens),
            "output_tokens": list(self.output_tokens),
            "cost_usd": list(self.cost_usd),
            "models": [
                {
                    "model": m.model,
                    "price": m.price,
                    "calls": list(m.calls),
                    "input_tokens": list(m.input_tokens),
                    "output_tokens": list(m.output_tokens),
                    "cost_usd": list(m.cost_usd),
                }
                for m in self.models
            ],
            "unknown_price": list(self.unknown_price),
            "offline": list(self.offline),
            "tools": list(self.tools),
            "notes": list(self.notes),
            "steps": [
                {
                    "step": s.step,
                    "role": s.role,
                    "kind": s.kind,
                    "model": s.model,
                    "count": list(s.count),
                    "calls": list(s.calls),
                    "input_tokens": list(s.input_tokens),
                    "output_tokens": list(s.output_tokens),
                }
                for s in self.steps
            ],
        }


def estimate_plan(plan: Plan, *, at: datetime | None = None) -> Estimate:
    """The estimate of `plan` as it stands (a plan's start, or a resumed run's plan). `at`: the
    time prices are looked up for (genai-prices keeps price history); None: now."""
    walk = _Walk(plan)
    walk.run()
    return _assemble(plan.name, walk, at)


# Prices


def is_offline(model: str) -> bool:
    """Scripted and test models answer locally, at no cost."""
    return model in OFFLINE_PREFIXES or model.partition(":")[0] in OFFLINE_PREFIXES


def price_usd(model: str, input_tokens: int, output_tokens: int, at: datetime | None = None) -> Decimal | None:
    """One call's price by genai-prices (0 offline), or None when it has no price for `model`."""
    return _price(model, input_tokens, output_tokens, at)


@lru_cache(maxsize=4096)
def _price(model: str, input_tokens: int, output_tokens: int, at: datetime | None) -> Decimal | None:
    if is_offline(model):
        return Decimal(0)
    provider, sep, name = model.partition(":")
    if not sep:  # a bare model name: genai-prices finds the provider
        provider_id: str | None = None
        name = model
    else:
        provider = provider.rsplit("/", 1)[-1]  # gateway/openai:gpt-5 -> openai
        if provider in SELF_HOSTED_PREFIXES:
            return None
        provider_id = PROVIDER_IDS.get(provider, provider)
    from genai_prices import Usage, calc_price  # here: importing it takes a fifth of a second

    try:
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        calculation = calc_price(usage, name, provider_id=provider_id, genai_request_timestamp=at)
    except (LookupError, ValueError):
        return None
    return calculation.total_price


# Walking the plan


def _ceil_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _json_len(value: Any) -> int:
    return len(json.dumps(value, indent=2, ensure_ascii=False, default=str))


class _Walk:
    """Goes through a plan in order, recording each model-calling step and the steps its control
    steps may add. Sizes are per scenario: index 0 the low end (controllers stop at their first
    chance), 1 the high end (their limits)."""

    def __init__(self, plan: Plan, prefix: str = "") -> None:
        self.plan = plan
        self.prefix = prefix  # a breakout's steps: `<its step>/`
        self.kinds = {s.id: s.kind for s in plan.steps}
        self.steps: list[StepEstimate] = []
        self.notes: list[str] = []
        self.tools: list[str] = []
        self.self_hosted: set[str] = set()  # models on a `base_url`: priced by whoever runs them
        self.out: dict[str, Range] = {}  # output characters by step id and role
        self.rewired: dict[str, Range] = {}  # control step -> what its dependents see as upstream

    def run(self) -> None:
        for step_id in self.plan.topological_order():
            step = self.plan.step(step_id)
            if step.kind == "agent":
                self.agent(step)
            elif step.kind == "merge":
                self.out[step.id] = (self.upstream(step, 0), self.upstream(step, 1))
            elif step.kind == "control":
                self.control(step)
            elif step.kind == "subrun":
                self.subrun(step)
            elif step.kind == "tasks":
                self.tasks(step)

    # Sizes

    def upstream(self, step: Step, s: int) -> int:
        """What `{{upstream}}` holds: the outputs of the agent, merge and subrun steps it follows
        (a control step's dependents follow what it adds instead)."""
        total = 0
        for dep in step.after:
            kind = self.kinds.get(dep)
            if kind in ("agent", "merge", "subrun"):
                total += self.out.get(dep, (0, 0))[s]
            elif kind == "control":
                total += self.rewired.get(dep, (0, 0))[s]
        return total

    def prompt_chars(self, step: Step, s: int, sized: Mapping[str, Range], refs: Mapping[str, Range], up: int) -> int:
        """The rendered prompt's length. `sized`: input keys known only by size; `refs`: other
        references ({{cohort.transcript}}) by size."""
        inputs: dict[str, Any] = {**self.plan.inputs, **step.input, **{k: "x" * v[s] for k, v in sized.items()}}
        if step.prompt is None:  # the agent gets its input and upstream as JSON
            return len(json.dumps({"input": inputs}, ensure_ascii=False, default=str)) + up
        total = len(REFERENCE.sub("", step.prompt))
        for match in REFERENCE.finditer(step.prompt):
            ref = match.group(1)
            root, _, rest = ref.partition(".")
            if ref in refs:
                total += refs[ref][s]
            elif root == "input":
                try:
                    value = lookup({"input": inputs}, ref)
                except TemplateError:
                    total += SMALL_CHARS
                    continue
                total += len(value) if isinstance(value, str) else _json_len(value)
            elif root == "steps":
                total += self.out.get(rest.split(".")[0], (CONTROL_CHARS, CONTROL_CHARS))[s]
            elif root == "upstream":
                total += up
            else:
                total += SMALL_CHARS
        return total

    # Agents

    def agent(
        self,
        step: Step,
        *,
        optional: bool = False,
        count: Range = (1, 1),
        sized: Mapping[str, Range] | None = None,
        refs: Mapping[str, Range] | None = None,
        upstream: Range | None = None,
        output_tokens: int | None = None,
        attempts: int = 1,
        label: str | None = None,
    ) -> None:
        """Record one agent step (or `count` alike, shown as `label`). `optional`: only the high
        end runs it."""
        spec = step.agent
        assert spec is not None
        if output_tokens is None:
            output_tokens = (
                CODER_OUTPUT_TOKENS if spec.kind == "coder" else CONTRIBUTION_TOKENS if step.output else TEXT_TOKENS
            )
        cap = spec.settings.get("max_tokens")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            output_tokens = min(output_tokens, cap)
        chars = output_tokens * CHARS_PER_TOKEN
        self.out[step.id] = self.out[step.agent_name] = (chars, chars)
        if spec.kind not in (*MODEL_KINDS, "cli"):
            return  # python and command agents call no model
        role = f"{self.prefix}{step.agent_name}"
        step_id = f"{self.prefix}{label or step.id}"
        low_count = 0 if optional else count[0]
        if spec.kind == "cli":
            self.tools.append(f"{step_id} ({spec.preset or 'command'})")
            self.steps.append(
                StepEstimate(
                    step_id, role, "cli", None, (low_count, count[1] * attempts), (0, 0), (0, 0), (low_count, count[1])
                )
            )
            return
        base: list[int] = []
        for s in (0, 1):
            up = upstream[s] if upstream is not None else self.upstream(step, s)
            prompt = self.prompt_chars(step, s, sized or {}, refs or {}, up)
            tokens = _ceil_tokens(len(spec.instructions or "") + prompt)
            tokens += SCHEMA_TOKENS if step.output else 0
            tokens += CODER_CONTEXT_TOKENS if spec.kind == "coder" else 0
            base.append(tokens)
        if spec.kind == "coder":
            iterations = spec.settings.get("max_iterations", CODER_ITERATIONS)
            iterations = iterations if isinstance(iterations, int) and iterations > 0 else CODER_ITERATIONS
            per_step = (CODER_REQUESTS_PER_ITERATION, CODER_REQUESTS_PER_ITERATION * iterations)
        else:
            per_step = (1, 1)
        policy = step.confidence
        if policy is not None and (policy.retry_below is not None or policy.escalate_below is not None):
            attempts = max(attempts, step.retry.max_attempts)  # a weak answer is asked again
        model = spec.model or ""
        if spec.base_url:
            model = f"{model} ({spec.base_url})"
            self.self_hosted.add(model)
        self.steps.append(
            StepEstimate(
                step=step_id,
                role=role,
                kind=spec.kind,
                model=model,
                calls=(low_count * per_step[0], count[1] * per_step[1] * attempts),
                input_tokens=(math.ceil(base[0] * LOW_FACTOR), math.ceil(base[1] * HIGH_FACTOR)),
                output_tokens=(math.ceil(output_tokens * LOW_FACTOR), math.ceil(output_tokens * HIGH_FACTOR)),
                count=(low_count, count[1]),
            )
        )

    def subrun(self, step: Step) -> None:
        assert step.subrun is not None
        child = Plan.model_validate(step.subrun.plan)
        child = child.model_copy(update={"inputs": {**child.inputs, **step.subrun.inputs}})
        walk = _Walk(child, f"{self.prefix}{step.id}/")
        walk.run()
        self.steps += walk.steps
        self.tools += walk.tools
        self.self_hosted |= walk.self_hosted
        self.notes += [f"{step.id} (breakout {child.name}): {note}" for note in walk.notes]
        self.out[step.id] = (TEXT_TOKENS * CHARS_PER_TOKEN, TEXT_TOKENS * CHARS_PER_TOKEN)

    def tasks(self, step: Step) -> None:
        assert step.tasks is not None
        graph = TaskGraphSpec.model_validate(step.tasks)
        retried = False
        for task in graph.tasks:
            work = Step(
                id=task.id,
                kind="agent",
                agent=task.agent,
                prompt=task.prompt or None,
                input={"writes": list(task.writes), "reads": list(task.reads)},
            )
            self.agent(work, upstream=(0, 0), attempts=task.max_attempts)
            retried = retried or (task.max_attempts > 1 and task.agent.kind in (*MODEL_KINDS, "cli"))
        if retried:
            self.notes.append("tasks: the high end runs each task up to its max_attempts")

    # Control steps

    def control(self, step: Step) -> None:
        assert step.control is not None
        handler = {
            "consensus": self.consensus,
            "cascade": self.cascade,
            "map": self.map,
            "review": self.review,
            "moderate": self.moderate,
            "orgchart": self.orgchart,
            "escalate": self.escalate,
        }.get(step.control.kind)
        if handler is None:  # pragma: no cover - every ControlKind has a handler
            self.notes.append(f"{step.id}: what a {step.control.kind} step adds is not estimated")
            return
        handler(step)

    def templates(self, step: Step) -> dict[str, dict[str, Any]]:
        assert step.control is not None
        return {str(t.get("role") or t.get("id")): dict(t) for t in step.control.templates}

    def _int(self, step: Step, key: str, default: int) -> int:
        assert step.control is not None
        value = step.control.settings.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    def consensus(self, step: Step) -> None:
        first = self._int(step, "round", 1)
        last = self._int(step, "max_rounds", first)
        templates = self.templates(step)
        previous = sum(self.out.get(role, (0, 0))[1] + SMALL_CHARS for role in templates)
        for n in range(first + 1, last + 1):
            for role, template in templates.items():
                added = make_step(template, f"{role}.r{n}", (step.id,), input={"round": n, "previous": {}})
                self.agent(added, optional=True, sized={"previous": (previous, previous)}, upstream=(0, 0))
        if last > first:
            assert step.control is not None
            threshold = step.control.settings.get("threshold")
            until = f"until {float(threshold):.0%} agree" if isinstance(threshold, int | float) else "until they agree"
            self.notes.append(f"consensus: {first} to {last} rounds of {len(templates)} agents, {until}")

    def cascade(self, step: Step) -> None:
        assert step.control is not None
        tier = self._int(step, "tier", 1)
        tiers = list(step.control.templates)
        for i, template in enumerate(tiers[tier:], start=tier):
            role = str(template.get("role"))
            before = self.out.get(str(tiers[i - 1].get("role")), (0, 0))[1] + SMALL_CHARS
            added = make_step(template, role, (step.id,), input={"tier": i + 1, "previous": None})
            self.agent(added, optional=True, sized={"previous": (before, before)}, upstream=(0, 0))
        if len(tiers) > tier:
            self.notes.append(f"cascade: {tier} to {len(tiers)} tiers, as long as a tier's confidence is too low")

    def map(self, step: Step) -> None:
        assert step.control is not None
        over = str(step.control.settings.get("over"))
        limit = self._int(step, "max_items", 1000)
        template = step.control.templates[0]
        role = str(template.get("role"))
        items: Any = None
        if over.startswith("input."):
            try:
                items = lookup({"input": self.plan.inputs}, over)
            except TemplateError:
                items = None
        after = (*step.after, step.id)
        if isinstance(items, list):
            count = (len(items), len(items))
            for i, item in enumerate(items):
                self.agent(make_step(template, f"{role}.{i}", after, input={"item": item, "index": i}))
            self.notes.append(f"map over {over}: {len(items)} items")
        else:
            count = (1, limit)
            added = make_step(template, f"{role}.0", after, input={"item": "", "index": 0})
            self.agent(added, count=count, sized={"item": (CONTROL_CHARS, CONTROL_CHARS)}, label=f"{role}.*")
            self.notes.append(
                f"map over {over}: 1 to {limit} items (the list comes at run time; map.max_items bounds it)"
            )
        chars = self.out.get(role, (0, 0))[1]
        self.rewired[step.id] = (count[0] * chars, count[1] * chars)

    def review(self, step: Step) -> None:
        assert step.control is not None
        first = self._int(step, "round", 1)
        last = self._int(step, "max_rounds", first)
        author = str(step.control.settings.get("author"))
        templates = self.templates(step)
        draft = self.out.get(author, (0, 0))[1]
        reviews = sum(self.out.get(r, (0, 0))[1] + SMALL_CHARS for r in templates if r != author)
        for n in range(first + 1, last + 1):
            revised = make_step(
                templates[author], f"{author}.r{n}", (step.id,), input={"round": n, "draft": None, "reviews": {}}
            )
            self.agent(
                revised, optional=True, sized={"draft": (draft, draft), "reviews": (reviews, reviews)}, upstream=(0, 0)
            )
            for role, template in templates.items():
                if role != author:
                    reviewer = make_step(template, f"{role}.r{n}", (revised.id,), input={"round": n})
                    self.agent(reviewer, optional=True, upstream=(draft, draft))
        if last > first:
            self.notes.append(f"review: {first} to {last} rounds of {author} and {len(templates) - 1} reviewers")

    def orgchart(self, step: Step) -> None:
        assert step.control is not None
        low, high = max(1, self._int(step, "min", 1)), max(1, self._int(step, "max", 1))
        low = min(low, high)
        template = step.control.templates[0]
        role = str(template.get("role"))
        assign = step.after[0]
        task_chars = max(SMALL_CHARS, self.out.get(assign, (0, 0))[1] // high)
        added = make_step(template, f"{role}.1.t1", (*step.after, step.id), input={"task": "", "instance": 1})
        self.agent(added, count=(low, high), sized={"task": (task_chars, task_chars)}, label=f"{role}.*")
        chars = self.out.get(role, (0, 0))[1]
        self.rewired[step.id] = (low * chars, high * chars)
        self.notes.append(
            f"{step.id}: {low} to {high} {role} tasks, as {assign} assigns them (more tasks than {high}: a call each)"
        )

    def escalate(self, step: Step) -> None:
        assert step.control is not None
        settings = step.control.settings
        depth = self._int(step, "depth", 0)
        max_depth = self._int(step, "max_depth", 2)
        chain_value = settings.get("chain")
        chain = [str(c) for c in chain_value] if isinstance(chain_value, list) else []
        stage = str(settings.get("stage"))
        templates = self.templates(step)
        judged = step.after[0]
        judged_after = self.plan.step(judged).after if judged in self.kinds else ()
        work = sum(self.out.get(d, (0, 0))[1] for d in judged_after)
        verdict = self.out.get(judged, (0, 0))[1]
        managers: list[str] = []
        while depth + 1 < len(chain) and depth < max_depth and chain[depth + 1] in templates:
            depth += 1
            manager = chain[depth]
            added = make_step(
                templates[manager],
                f"{stage}.escalated.{depth}",
                (step.id,),
                input={"escalated_from": chain[depth - 1], "reason": "", "verdict": None, "depth": depth, "work": None},
            )
            sized = {"reason": (REASON_CHARS, REASON_CHARS), "verdict": (verdict, verdict), "work": (work, work)}
            self.agent(added, optional=True, sized=sized, upstream=(0, 0))
            managers.append(manager)
        if managers:
            self.notes.append(f"{stage}: up to {len(managers)} escalation(s) ({', '.join(managers)}) unless approved")

    def moderate(self, step: Step) -> None:
        """Cohorts: rounds of every cohort's members, a moderator turn every `cadence` rounds,
        then the synthesis. Low: the moderator concludes at its first turn. High: the round
        limit (`max_rounds`, by default phases x rounds_per_phase), or each cohort's
        `max_messages` (a member's turn is one message), whichever comes first."""
        assert step.control is not None
        settings = step.control.settings
        raw_cohorts = settings.get("cohorts")
        cohorts: dict[str, list[str]] = (
            {str(c): [str(m) for m in members] for c, members in raw_cohorts.items() if isinstance(members, list)}
            if isinstance(raw_cohorts, dict)
            else {}
        )
        raw_phases = settings.get("phases")
        phases = [p for p in raw_phases if isinstance(p, dict)] if isinstance(raw_phases, list) else []
        phases = phases or [{"name": "discussion", "prompt": ""}]
        per_phase = max(1, self._int(step, "rounds_per_phase", 1))
        first = self._int(step, "round", 1)
        max_rounds = self._int(step, "max_rounds", 0) or len(phases) * per_phase
        cadence = max(1, self._int(step, "cadence", 1))
        limit = settings.get("max_messages")
        templates = self.templates(step)

        def own_rounds(members: list[str]) -> int:  # rounds a cohort may take within max_messages
            if not isinstance(limit, int) or isinstance(limit, bool) or not members:
                return max_rounds
            return min(max_rounds, max(1, math.ceil(limit / len(members))))

        rounds = {c: own_rounds(m) for c, m in cohorts.items()}
        high = max([first, *rounds.values()])
        low = min(high, max(first, cadence * math.ceil(first / cadence)))  # the moderator's first turn

        def message_chars(role: str) -> int:
            return min(self.out.get(role, (0, 0))[1], MESSAGE_CHARS) + LINE_CHARS

        def transcript(cohort: str, after_round: int) -> int:
            taken = min(after_round, rounds[cohort])
            return max(SMALL_CHARS, taken * sum(message_chars(m) for m in cohorts[cohort]))

        def all_transcripts(after_round: int) -> int:
            return sum(transcript(c, after_round) + len(c) + 8 for c in cohorts)

        def phase(n: int) -> dict[str, Any]:
            index = min((n - 1) // per_phase, len(phases) - 1)
            return {
                "round": n,
                "phase": str(phases[index].get("name")),
                "phase_prompt": phases[index].get("prompt", ""),
            }

        for n in range(first + 1, high + 1):
            for cohort, members in cohorts.items():
                if n > rounds[cohort]:
                    continue
                for role in members:
                    base = self._cohort_turn(cohort, role, templates, first)
                    if base is None:
                        continue
                    turn = make_step(
                        base,
                        f"{cohort}.{role}.{n}",
                        (step.id,),
                        cohort=cohort,
                        input={**base.get("input", {}), **phase(n)},
                    )
                    size = transcript(cohort, n - 1)
                    self.agent(
                        turn,
                        optional=n > low,
                        upstream=(0, 0),
                        refs={"cohort.transcript": (size, size), "cohorts": (2, 2)},
                    )
        moderator_turns = 0
        if "moderator" in templates:
            for n in range(first, high + 1):
                if n % cadence:
                    continue
                turn = make_step(templates["moderator"], f"moderator.{n}", (step.id,), input=phase(n))
                size = all_transcripts(n)
                self.agent(
                    turn,
                    optional=n > low,
                    upstream=(0, 0),
                    refs={"cohorts": (size, size)},
                    output_tokens=MODERATOR_TOKENS,
                )
                moderator_turns += 1
        if "synthesis" in templates:
            synthesis = make_step(templates["synthesis"], "synthesis", (step.id,), input={"rounds": high, "log": []})
            sizes = (all_transcripts(low), all_transcripts(high))
            self.agent(synthesis, upstream=(0, 0), refs={"cohorts": sizes}, output_tokens=SYNTHESIS_TOKENS)
        member_count = sum(len(m) for m in cohorts.values())
        self.notes.append(
            f"cohorts: {low} to {high} rounds of {member_count} members in {len(cohorts)} cohorts, depending on the "
            f"moderator ({moderator_turns} moderator turn{'s' if moderator_turns != 1 else ''} at most), "
            "then the synthesis"
        )
        if high < max_rounds:
            self.notes.append(f"cohorts: max_messages ({limit}) ends the discussion before max_rounds ({max_rounds})")
        self.notes.append("cohorts: breakouts, forks and people's requests add turns beyond this estimate")

    def _cohort_turn(self, cohort: str, role: str, templates: Mapping[str, Any], first: int) -> dict[str, Any] | None:
        """A member's turn as compiled (its first round holds the cohort's brief), to copy."""
        compiled = f"{cohort}.{role}.{first}"
        if compiled in self.kinds:
            data = self.plan.step(compiled).model_dump(mode="json", by_alias=True, exclude_defaults=True)
            data.pop("after", None)
            return data
        template = templates.get(role)
        return dict(template) if isinstance(template, Mapping) else None


# Totals


def _assemble(name: str, walk: _Walk, at: datetime | None) -> Estimate:
    by_model: dict[str, list[StepEstimate]] = {}
    for step in walk.steps:
        if step.kind in MODEL_KINDS and step.model is not None:
            by_model.setdefault(step.model, []).append(step)
    models: list[ModelEstimate] = []
    for model, steps in by_model.items():
        calls = (sum(s.calls[0] for s in steps), sum(s.calls[1] for s in steps))
        input_tokens = (
            sum(s.calls[0] * s.input_tokens[0] for s in steps),
            sum(s.calls[1] * s.input_tokens[1] for s in steps),
        )
        output_tokens = (
            sum(s.calls[0] * s.output_tokens[0] for s in steps),
            sum(s.calls[1] * s.output_tokens[1] for s in steps),
        )
        kind: PriceKind = "offline" if is_offline(model) else "unknown" if model in walk.self_hosted else "known"
        cost = UNKNOWN_COST
        if kind != "unknown":
            low = [_price(model, s.input_tokens[0], s.output_tokens[0], at) for s in steps]
            high = [_price(model, s.input_tokens[1], s.output_tokens[1], at) for s in steps]
            if all(p is not None for p in (*low, *high)):
                cost = (
                    float(sum((s.calls[0] * p for s, p in zip(steps, low, strict=True) if p is not None), Decimal(0))),
                    float(sum((s.calls[1] * p for s, p in zip(steps, high, strict=True) if p is not None), Decimal(0))),
                )
            else:
                kind = "unknown"
        models.append(ModelEstimate(model, kind, calls, input_tokens, output_tokens, cost))
    roles = {s.role for s in walk.steps}
    return _estimate(
        name, len(roles), models, tools=tuple(walk.tools), notes=tuple(walk.notes), steps=tuple(walk.steps)
    )


def _estimate(
    name: str,
    agents: int,
    models: list[ModelEstimate],
    *,
    tools: tuple[str, ...],
    notes: tuple[str, ...],
    steps: tuple[StepEstimate, ...],
) -> Estimate:
    """The totals over `models`. Cost: the known-price models' (offline ones at $0); $0 with no
    model call at all; unknown only when every model's price is."""
    priced = [m.cost_usd for m in models if m.cost_usd[1] is not None]
    cost: Cost = (
        (sum(c[0] or 0.0 for c in priced), sum(c[1] or 0.0 for c in priced)) if priced or not models else UNKNOWN_COST
    )
    return Estimate(
        plan=name,
        agents=agents,
        calls=_sum(m.calls for m in models),
        input_tokens=_sum(m.input_tokens for m in models),
        output_tokens=_sum(m.output_tokens for m in models),
        cost_usd=cost,
        models=tuple(models),
        unknown_price=tuple(m.model for m in models if m.price == "unknown"),
        offline=tuple(m.model for m in models if m.price == "offline"),
        tools=tools,
        notes=tuple(dict.fromkeys(notes)),
        steps=steps,
    )


def _add(a: Range, b: Range) -> Range:
    return a[0] + b[0], a[1] + b[1]


def _sum(ranges: Iterable[Range]) -> Range:
    total = (0, 0)
    for r in ranges:
        total = _add(total, r)
    return total


# Formatting


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{round(n / 1000)}k"
    if n >= 1_000:
        return f"{n / 1000:.1f}k"
    return str(n)


def _span(r: Range, show: Callable[[int], str] = str) -> str:
    return show(r[0]) if r[0] == r[1] else f"{show(r[0])}–{show(r[1])}"


def _dollars(x: float) -> str:
    if x == 0:
        return "$0"
    if x < 0.01:
        return f"${x:.4f}"
    return f"${x:.2f}"


def _cost_span(cost: Cost) -> str:
    if cost[0] is None or cost[1] is None:
        return "cost unknown"
    low, high = _dollars(cost[0]), _dollars(cost[1])
    return low if low == high else f"{low}–{high}"


__all__ = [
    "CHARS_PER_TOKEN",
    "CODER_CONTEXT_TOKENS",
    "CODER_ITERATIONS",
    "CODER_OUTPUT_TOKENS",
    "CODER_REQUESTS_PER_ITERATION",
    "CONTRIBUTION_TOKENS",
    "HIGH_FACTOR",
    "LOW_FACTOR",
    "MODERATOR_TOKENS",
    "SCHEMA_TOKENS",
    "SYNTHESIS_TOKENS",
    "TEXT_TOKENS",
    "Estimate",
    "ModelEstimate",
    "StepEstimate",
    "estimate_plan",
    "is_offline",
    "price_usd",
]
