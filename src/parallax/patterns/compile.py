"""YAML pattern documents (already parsed, schema-checked and env-expanded) -> Plan IR.

One compiler per pattern (here, and cohorts and the org chart in `patterns/cohorts.py`; which
one a document gets is chosen by `patterns/yaml_loader.py`); they share the agent-step builder
(role defaults, model defaults, output types, confidence policies) and raise located errors
(`file:line:col: field: what`, see `patterns/located.py`). A breakout's own pattern file is
read through the `load_pattern` the compiler is given, so this module reads no files itself.
Patterns that decide at run time (consensus, cascade, map-reduce, review, cohorts, org chart)
compile their first round statically plus a `control` step holding the templates for the rest.

Step ids never collide, now or later in the run: the names a pattern gives (agents, roles,
cohorts, approvals) have no `.` (the schema's NAME), while every id a run generates is a name or
a word the pattern owns followed by `.suffix` (`writer.r2`, `summarize.3`, `team.alice.4`,
`review.1.check.2`); the words a pattern owns (`RESERVED`) cannot be names in it; and an id
used twice is refused at its second occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from parallax.agents.refs import resolve_ref
from parallax.core import actions
from parallax.core.errors import PlanError
from parallax.core.plan import (
    AgentSpec,
    Budget,
    ConfidencePolicy,
    ControlSpec,
    GateSpec,
    MergeSpec,
    Plan,
    RetryPolicy,
    RuleSpec,
    Step,
    SubrunSpec,
    VoteSpec,
    find_cycle,
)
from parallax.core.tasks import TaskGraphSpec, TaskSpec
from parallax.model_choice import ModelChoice
from parallax.patterns.located import Located, Path_

_MODEL_STRING = re.compile(r"^[A-Za-z0-9_.\-]+:.+$|^test$")  # a pydantic-ai model string
_AGENT_FIELDS = ("model", "base_url", "instructions", "ref", "command", "preset", "settings")
# The words each pattern names its own steps after (and what those steps are called).
RESERVED: dict[str, dict[str, str]] = {
    "fanout": {"merge": "merge"},
    "pipeline": {"merge": "merge"},
    "vote": {"vote": "vote"},
    "review": {"review": "review.r1, review.r2, ..."},
    "consensus": {"vote": "vote.r1, vote.r2, ...", "consensus": "consensus.r1, consensus.r2, ..."},
    "mapreduce": {"split": "split"},
    "orgchart": {w: f"{w}.1, {w}.2, ..." for w in ("assign", "distribute", "review", "approve", "aggregate")},
    "tasks": {"tasks": "tasks"},
}
_ROLE_DEFAULTS = ("kind", "model", "base_url", "instructions", "preset", "env", "settings", "timeout_s", "retry",
                  "confidence", "output", "ref", "command")  # fmt: skip


class Compiler:
    def __init__(
        self,
        data: dict[str, Any],
        where: Located,
        file: str,
        types: dict[str, dict[str, str]],
        load_pattern: Callable[[Path], Plan],
    ) -> None:
        self.data = data
        self.where = where
        self.file = file
        self.types = types
        self.load_pattern = load_pattern  # a pattern file -> its Plan (a breakout's)
        self.roles: dict[str, dict[str, Any]] = data.get("roles", {})
        self.retry = RetryPolicy(**data["retry"]) if "retry" in data else RetryPolicy()
        self.registry: list[dict[str, Any]] | None = None  # live registered agents, when compiled for a store
        self.origins: dict[str, list[Path_]] = {}  # step id -> where in the file each step of that id came from
        self.models = ModelChoice()  # the command's --model and the configured default
        self.model_reasons: dict[str, tuple[str, str]] = {}  # step id -> (its model, why)
        self.model_names: set[str] = set()  # every role, name and step id a --model ROLE= could target

    def error(self, path: Path_, message: str) -> PlanError:
        return self.where.error(path, message)

    def check_reserved(self) -> None:
        """No agent, role or approval may be named after the steps the pattern makes itself."""
        pattern = self.data["pattern"]
        words = RESERVED.get(pattern, {})
        sections = ["agents", "approvals", *(["roles"] if pattern == "orgchart" else [])]
        for section in sections:
            for name in self.data.get(section) or {}:
                if name in words:
                    raise self.error(
                        (section, name),
                        f"{name!r} is reserved in a {pattern} pattern, which names its own steps {words[name]}; "
                        "choose another name",
                    )

    def check_unique(self, steps: list[Step]) -> None:
        """Each step id once; a repeated one is reported where it is written the second time."""
        seen: set[str] = set()
        for step in steps:
            if step.id not in seen:
                seen.add(step.id)
                continue
            paths = sorted(self.origins.get(step.id, []), key=self.where.position)
            if len(paths) >= 2:
                first_line = self.where.position(paths[0])[0]
                raise self.error(paths[-1], f"step id {step.id!r} is used twice (first at line {first_line})")
            if paths:
                raise self.error(
                    paths[0], f"{step.id!r} is also the id of a step the {self.data['pattern']} pattern adds; "
                    "choose another name",
                )  # fmt: skip
            raise self.error((), f"step id {step.id!r} is used twice")

    # Agents

    def agents(self) -> dict[str, dict[str, Any]]:
        agents = self.data.get("agents")
        if not agents:
            raise self.error((), f"a {self.data['pattern']} pattern needs `agents`")
        return dict(agents)

    def with_role(self, agent: dict[str, Any], path: Path_) -> dict[str, Any]:
        """The agent's own fields over its role's defaults."""
        role = agent.get("role")
        if role is None:
            return agent
        if role not in self.roles:
            declared = ", ".join(self.roles) or "none declared"
            raise self.error((*path, "role"), f"unknown role {role!r} (roles: {declared})")
        defaults = {k: v for k, v in self.roles[role].items() if k in _ROLE_DEFAULTS}
        return {**defaults, **agent}

    def check_cli_model(self, preset: str | None, path: Path_) -> None:
        """`model:` on a cli agent goes to its preset's model flag; refused where there is none."""
        from parallax.agents.cli import PRESETS  # lazily: the presets (and the config's) live there

        if preset is None:
            raise self.error(path, "a cli agent run from a `command` template has no model flag: put it in the command")
        known = PRESETS.get(preset)
        if known is not None and not known.model_flag:
            raise self.error(path, f"preset {preset!r} has no model flag (set model_flag in [presets.{preset}])")

    def output_ref(self, name: str | None, path: Path_) -> str | None:
        return output_ref(name, path, self.types, self.where)

    def agent_step(
        self,
        step_id: str,
        agent: dict[str, Any],
        path: Path_,
        *,
        after: tuple[str, ...] = (),
        role: str | None = None,
        default_output: str | None = None,
        default_prompt: str | None = None,
        **extra: Any,
    ) -> Step:
        self.origins.setdefault(step_id, []).append(path)
        agent = self.with_role(agent, path)
        kind = agent.get("kind", "llm")
        if kind == "breakout":
            return self.breakout_step(step_id, agent, path, after)
        fields = {k: agent[k] for k in _AGENT_FIELDS if k in agent}
        if kind in ("llm", "coder"):
            names = tuple(n for n in (agent.get("role"), role, step_id) if n)
            self.model_names.update(names)
            model, why = self.models.choose(names, fields.get("model"), self.data.get("model"))
            if not model:
                raise self.error(path, f"an {kind} agent needs a model: {why}")
            if not _MODEL_STRING.match(model):
                where = (
                    (*path, "model") if fields.get("model") == model else ("model",) if "model" in self.data else path
                )
                raise self.error(where, f"{model!r} does not look right (expected provider:model, e.g. openai:gpt-5)")
            fields["model"] = relative_to(model, self.file)
            self.model_reasons[step_id] = (fields["model"], why)
        if kind == "cli" and fields.get("model"):
            self.check_cli_model(fields.get("preset"), (*path, "model"))
        fields["env"] = tuple(agent.get("env", ()))
        if "cache" in agent:
            fields["cache"] = agent["cache"]
        try:
            spec = AgentSpec.model_validate({"kind": kind, **fields})
        except ValidationError as e:
            raise self.error(path, "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from e
        output = agent.get("output")
        output_ref = self.output_ref(output, (*path, "output")) if output else default_output
        try:
            return Step(
                id=step_id,
                kind="agent",
                agent=spec,
                after=after,
                prompt=agent.get("prompt", default_prompt),
                output=output_ref,
                timeout_s=agent.get("timeout_s", self.data.get("timeout_s")),
                retry=RetryPolicy(**agent["retry"]) if "retry" in agent else self.retry,
                verify=agent.get("verify"),
                reads=tuple(agent.get("reads", ())),
                confidence=ConfidencePolicy(**agent["confidence"]) if "confidence" in agent else None,
                role=role,
                **extra,
            )
        except ValidationError as e:
            raise self.error(path, "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from e

    def breakout_step(self, step_id: str, agent: dict[str, Any], path: Path_, after: tuple[str, ...]) -> Step:
        if "pattern" not in agent:
            raise self.error(path, "a breakout needs `pattern:` (the pattern file it runs)")
        target = Path(agent["pattern"])
        if not target.is_absolute() and not self.file.startswith("<"):
            target = Path(self.file).resolve().parent / target
        if self.file != "<pattern>" and target.resolve() == Path(self.file).resolve():
            raise self.error((*path, "pattern"), "a breakout cannot run the pattern it is part of")
        try:
            child = self.load_pattern(target)
        except PlanError as e:
            raise self.error((*path, "pattern"), f"the breakout's pattern does not compile: {e}") from e
        return Step(
            id=step_id,
            kind="subrun",
            after=after,
            subrun=SubrunSpec(
                plan=child.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                inputs=agent.get("inputs", {}),
            ),
        )

    def check_after(self, steps: list[Step], names: list[str]) -> None:
        self.check_unique(steps)
        known = {s.id for s in steps}
        for step in steps:
            for i, dep in enumerate(step.after):
                if dep not in known:
                    raise self.error(
                        ("agents", step.id, "after", i), f"unknown agent {dep!r} (agents: {', '.join(names)})"
                    )
        cycle = find_cycle({s.id: s.after for s in steps})
        if cycle:
            raise self.error(("agents", cycle[0], "after"), f"the agents form a cycle: {' -> '.join(cycle)}")

    def approvals(self, steps: list[Step]) -> list[Step]:
        gates = []
        for name, gate in self.data.get("approvals", {}).items():
            self.origins.setdefault(name, []).append(("approvals", name))
            gates.append(
                Step(
                    id=name,
                    kind="gate",
                    after=tuple(gate["after"]),
                    gate=GateSpec(
                        kind="approval",
                        prompt=gate.get("prompt"),
                        timeout_s=gate.get("timeout_s"),
                        on_timeout=gate.get("on_timeout", "reject"),
                    ),
                )
            )
        known = {s.id for s in steps} | {g.id for g in gates}
        for gate in gates:
            for i, dep in enumerate(gate.after):
                if dep not in known:
                    raise self.error(("approvals", gate.id, "after", i), f"unknown step {dep!r}")
        return gates

    def plan(self, steps: list[Step]) -> Plan:
        data = self.data
        self.check_unique(steps)
        try:
            budget = Budget(**data.get("budget", {}))
        except ValidationError as e:
            raise self.error(("budget", *_written(e)), _messages(e)) from e
        try:
            return Plan(
                name=data["name"],
                steps=tuple(steps),
                inputs=data.get("inputs", {}),
                concurrency=data.get("concurrency", 64),
                budget=budget,
                types=self.types,
            )
        except ValidationError as e:
            where = _written(e)
            raise self.error(where if where[:1] and where[0] in data else (), _messages(e)) from e

    # Patterns

    def expand_selections(self, agents: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """`select:` entries become one agent per chosen registered agent (`<name>-<id>`)."""
        out: dict[str, dict[str, Any]] = {}
        for name, agent in agents.items():
            if "select" not in agent:
                out[name] = agent
                continue
            select = agent["select"]
            wanted = set(select["capabilities"])
            if self.registry is None:
                raise self.error(
                    ("agents", name, "select"), "selecting agents needs the registry (run it through a store)"
                )
            chosen = [r for r in self.registry if wanted <= set(r["capabilities"])][: select.get("max", 1000)]
            low = select.get("min", 1)
            if len(chosen) < low:
                have = ", ".join(r["id"] for r in chosen) or "none"
                found = f"the registry has {len(chosen)} ({have})"
                message = f"needs {low} live agent(s) with {sorted(wanted)}; {found}"
                raise self.error(("agents", name, "select"), message)
            rest = {k: v for k, v in agent.items() if k != "select"}
            for registered in chosen:
                out[f"{name}-{registered['id']}"] = {**registered["agent"], **rest}
        return out

    def fanout_like(self) -> list[Step]:
        data = self.data
        agents = self.expand_selections(self.agents())
        names = list(agents)
        steps: list[Step] = []
        for index, (name, agent) in enumerate(agents.items()):
            if data["pattern"] == "pipeline":
                after = tuple(agent.get("after", [names[index - 1]] if index else []))
            else:
                after = tuple(agent.get("after", ()))
            steps.append(self.agent_step(name, agent, ("agents", name), after=after))
        gates = self.approvals(steps)
        self.check_after([*steps, *gates], [*names, *(g.id for g in gates)])
        steps += gates
        sinks = [s.id for s in steps if not any(s.id in o.after for o in steps)]
        if data["pattern"] == "vote":
            if "vote" not in data:
                raise self.error((), "a vote pattern needs `vote: {field: ..., weighted: ...}`")
            steps.append(
                Step(
                    id="vote",
                    kind="merge",
                    after=tuple(sinks),
                    merge=MergeSpec(
                        vote=VoteSpec(field=data["vote"]["field"], weighted=data["vote"].get("weighted", False)),
                        min_contributions=data["vote"].get("min_contributions"),
                    ),
                )
            )
        elif "merge" in data or data["pattern"] == "fanout":
            steps.append(self.merge_step(data.get("merge", {}), sinks, names))
        return steps

    def merge_step(self, merge: dict[str, Any], sinks: list[str], names: list[str]) -> Step:
        rules = []
        for i, rule in enumerate(merge.get("rules", [])):
            name = rule.get("name") or f"rule {i + 1}"
            if "every" in rule:
                spec_rule = {"name": name, "kind": "every", "each": rule["every"], "in": rule["within"]}
            elif "disjoint" in rule:
                spec_rule = {
                    "name": name,
                    "kind": "disjoint",
                    "left": rule["disjoint"][0],
                    "right": rule["disjoint"][1],
                }
            else:
                spec_rule = {"name": name, "kind": "python", "ref": rule["python"]}
            rules.append(RuleSpec.model_validate({**spec_rule, "message": rule.get("message")}))
        merge_after = tuple(merge.get("after", sinks))
        for i, dep in enumerate(merge_after):
            if dep not in names:
                raise self.error(("merge", "after", i), f"unknown agent {dep!r}")
        target = self.output_ref(merge.get("into"), ("merge", "into"))
        return Step(
            id="merge",
            kind="merge",
            after=merge_after,
            merge=MergeSpec(
                target=target,
                rules=tuple(rules),
                ignore=tuple(merge.get("ignore", ())),
                min_contributions=merge.get("min_contributions"),
            ),
        )

    def review(self) -> list[Step]:
        agents = self.agents()
        settings = self.data.get("review", {})
        author = settings.get("author", next(iter(agents)))
        if author not in agents:
            raise self.error(("review", "author"), f"unknown agent {author!r} (agents: {', '.join(agents)})")
        reviewers = [n for n in agents if n != author]
        if not reviewers:
            raise self.error(("agents",), "a review needs an author and at least one reviewer")
        first = self.agent_step(
            f"{author}.r1", agents[author], ("agents", author), role=author,
            input={"round": 1, "draft": None, "reviews": {}},
        )  # fmt: skip
        verdict = actions.ref(actions.Verdict)
        reviews = [
            self.agent_step(f"{r}.r1", agents[r], ("agents", r), after=(first.id,), role=r, default_output=verdict,
                            input={"round": 1})
            for r in reviewers
        ]  # fmt: skip
        templates = [_template(first), *(_template(r) for r in reviews)]
        control = Step(
            id="review.r1",
            kind="control",
            after=tuple(r.id for r in reviews),
            control=ControlSpec(
                kind="review",
                settings={
                    "round": 1,
                    "author": author,
                    "approve_at": settings.get("approve_at", 0.5),
                    "max_rounds": settings.get("max_rounds", 3),
                },
                templates=tuple(templates),
            ),
        )
        return [first, *reviews, control]

    def consensus(self) -> list[Step]:
        agents = self.agents()
        settings = self.data.get("consensus")
        if settings is None:
            raise self.error((), "a consensus pattern needs `consensus: {field: ..., threshold: ...}`")
        if len(agents) < 2:
            raise self.error(("agents",), "a consensus needs at least two agents")
        first = [
            self.agent_step(f"{n}.r1", a, ("agents", n), role=n, input={"round": 1, "previous": {}})
            for n, a in agents.items()
        ]
        vote = Step(
            id="vote.r1",
            kind="merge",
            after=tuple(s.id for s in first),
            merge=MergeSpec(
                vote=VoteSpec(field=settings["field"], weighted=settings.get("weighted", False)),
                min_contributions=settings.get("min_contributions"),
            ),
        )
        control = Step(
            id="consensus.r1",
            kind="control",
            after=(vote.id,),
            control=ControlSpec(
                kind="consensus",
                settings={
                    "round": 1,
                    "threshold": settings.get("threshold", 0.75),
                    "max_rounds": settings.get("max_rounds", 3),
                },
                templates=tuple(_template(s) for s in first),
            ),
        )
        return [*first, vote, control]

    def cascade(self) -> list[Step]:
        agents = self.agents()
        if "cascade" not in self.data:
            raise self.error((), "a cascade pattern needs `cascade: {threshold: ...}`")
        tiers = [
            self.agent_step(n, a, ("agents", n), role=n, input={"tier": i + 1, "previous": None})
            for i, (n, a) in enumerate(agents.items())
        ]
        if len(tiers) < 2:
            raise self.error(("agents",), "a cascade needs at least two tiers (cheapest first)")
        control = Step(
            id="cascade.1",
            kind="control",
            after=(tiers[0].id,),
            control=ControlSpec(
                kind="cascade",
                settings={"tier": 1, "threshold": self.data["cascade"]["threshold"]},
                templates=tuple(_template(t) for t in tiers),
            ),
        )
        return [tiers[0], control]

    def mapreduce(self) -> list[Step]:
        agents = self.agents()
        if "map" not in self.data:
            raise self.error((), "a mapreduce pattern needs `map: {over: input.<list>, agent: <name>}`")
        spec = self.data["map"]
        mapper, reducer = spec["agent"], spec.get("reduce")
        for key, name in (("agent", mapper), ("reduce", reducer)):
            if name is not None and name not in agents:
                raise self.error(("map", key), f"unknown agent {name!r} (agents: {', '.join(agents)})")
        others = {n: a for n, a in agents.items() if n not in (mapper, reducer)}
        steps = [self.agent_step(n, a, ("agents", n), after=tuple(a.get("after", ()))) for n, a in others.items()]
        over = spec["over"]
        source = over.split(".")[1] if over.startswith("steps.") else None
        if source is not None and source not in others:
            raise self.error(("map", "over"), f"{over!r} names no agent that runs before the map")
        item = self.agent_step(f"{mapper}.0", agents[mapper], ("agents", mapper), role=mapper)
        split = Step(
            id="split",
            kind="control",
            after=(source,) if source else (),
            control=ControlSpec(
                kind="map",
                settings={"over": over, "max_items": spec.get("max_items", 1000)},
                templates=(_template(item),),
            ),
        )
        steps.append(split)
        if reducer is not None:
            steps.append(self.agent_step(reducer, agents[reducer], ("agents", reducer), after=("split",)))
        self.check_after(steps, list(agents))
        return steps


def _template(step: Step) -> dict[str, Any]:
    return step.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"after"})


def _messages(error: ValidationError) -> str:
    return "; ".join(err["msg"].removeprefix("Value error, ") for err in error.errors())


def _written(error: ValidationError) -> tuple[str | int, ...]:
    """The field a validation error is about, as written in the pattern (the first error's)."""
    errors = error.errors()
    return tuple(part for part in errors[0]["loc"] if isinstance(part, str | int)) if errors else ()


def relative_to(model: str | None, file: str) -> str | None:
    """`scripted:answers.json` in a pattern file means next to that file."""
    if model and model.startswith("scripted:") and not file.startswith("<"):
        answers = Path(model.removeprefix("scripted:"))
        if not answers.is_absolute():
            return f"scripted:{Path(file).resolve().parent / answers}"
    return model


def output_ref(name: str | None, path: Path_, types: dict[str, dict[str, str]], where: Located) -> str | None:
    if name is None:
        return None
    if ":" in name:
        try:
            obj = resolve_ref(name)
        except PlanError as e:
            raise where.error(path, f"cannot load the output model: {e}") from e
        if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
            raise where.error(path, f"{name!r} is not a pydantic model")
        return name
    if name not in types:
        declared = ", ".join(types) or "none declared"
        raise where.error(path, f"unknown type {name!r}; declare it under `types` ({declared}) or use module:Class")
    return f"types:{name}"


def compile_tasks(c: Compiler) -> list[Step]:
    """`pattern: tasks`: a task graph of coding tasks, each in its own worktree."""
    data = c.data
    if "tasks" not in data:
        raise c.error((), "a tasks pattern needs `tasks`")
    names = list(data["tasks"])
    specs = []
    for name, task in data["tasks"].items():
        path: Path_ = ("tasks", name)
        for key in ("after", "peers"):
            for i, ref in enumerate(task.get(key, ())):
                if ref not in names:
                    raise c.error((*path, key, i), f"unknown task {ref!r} (tasks: {', '.join(names)})")
        step = c.agent_step(name, task["agent"], (*path, "agent"))
        assert step.agent is not None
        fields = {k: task[k] for k in ("prompt", "writes", "reads", "contracts", "peers", "verify", "network",
                                         "sandbox", "timeout_s", "max_attempts") if k in task}  # fmt: skip
        try:
            after = tuple(task.get("after", ()))
            specs.append(TaskSpec.model_validate({"id": name, "after": after, "agent": step.agent, **fields}))
        except ValidationError as e:
            raise c.error(path, "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from e
    resolver = None
    if "resolver" in data:  # any agent a task can have; it runs when a merge conflicts
        resolver = c.agent_step("resolver", data["resolver"]["agent"], ("resolver", "agent")).agent
    try:
        graph = TaskGraphSpec(
            tasks=tuple(specs),
            workers=data.get("workers", 4),
            lease_s=data.get("lease_s", 30.0),
            verify=data.get("verify"),
            review=data.get("review_queue", False),
            resolver=resolver,
        )
    except ValidationError as e:
        raise c.error(("tasks",), "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from e
    return [Step(id="tasks", kind="tasks", tasks=graph.model_dump(mode="json", exclude_defaults=True))]
