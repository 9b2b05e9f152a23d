"""The Python way to write a plan: small builders that return Plan IR pieces.

    plan = fanout(
        "feature-spec",
        brief="...",
        agents={"frontend": llm("Design the UI for: {{input.brief}}", output=FrontendView), ...},
        merge_into=FeatureSpec,
        rules=[every("backend.endpoints[*].path", within="security.authorization[*].endpoint")],
        timeout_s=60,
    )

Models and functions are referenced by import path (`ref_of`), so a plan is plain data: it
hashes the same everywhere and a resumed run finds the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, JsonValue

from parallax.agents.refs import ref_of
from parallax.core.plan import (
    AgentSpec,
    Budget,
    Limits,
    MergeSpec,
    Plan,
    RetryPolicy,
    RuleSpec,
    Step,
)


class AgentDraft:
    """An agent spec plus the step-level choices that usually travel with it."""

    def __init__(
        self, fields: dict[str, Any], prompt: str | None, output: type[BaseModel] | str | None, verify: str | None
    ) -> None:
        self.fields = fields
        self.prompt = prompt
        self.output = output
        self.verify = verify

    def spec(self, default_model: str | None = None) -> AgentSpec:
        fields = dict(self.fields)
        if fields["kind"] == "llm" and not fields.get("model"):
            if not default_model:
                raise ValueError("an llm agent needs a model: pass model= to llm() or to the pattern")
            fields["model"] = default_model
        return AgentSpec.model_validate(fields)

    def output_ref(self) -> str | None:
        if self.output is None or isinstance(self.output, str):
            return self.output
        return ref_of(self.output)


def llm(
    prompt: str,
    *,
    output: type[BaseModel] | str | None = None,
    model: str | None = None,
    instructions: str | None = None,
    base_url: str | None = None,
    verify: str | None = None,
    **settings: JsonValue,
) -> AgentDraft:
    """An llm agent. `model` defaults to the plan-wide model given to `fanout`."""
    fields = {"kind": "llm", "model": model, "instructions": instructions, "base_url": base_url, "settings": settings}
    return AgentDraft(fields, prompt, output, verify)


def python(
    fn: Callable[..., Any] | str, *, output: type[BaseModel] | str | None = None, prompt: str | None = None
) -> AgentDraft:
    ref = fn if isinstance(fn, str) else ref_of(fn)
    return AgentDraft({"kind": "python", "ref": ref}, prompt, output, None)


def command(
    cmd: str, *, output: type[BaseModel] | str | None = None, env: Sequence[str] = (), verify: str | None = None
) -> AgentDraft:
    return AgentDraft({"kind": "command", "command": cmd, "env": tuple(env)}, None, output, verify)


def cli(
    preset: str,
    prompt: str,
    *,
    output: type[BaseModel] | str | None = None,
    model: str | None = None,
    env: Sequence[str] = (),
) -> AgentDraft:
    settings: dict[str, JsonValue] = {"model": model} if model else {}
    return AgentDraft({"kind": "cli", "preset": preset, "env": tuple(env), "settings": settings}, prompt, output, None)


def every(each: str, *, within: str, name: str | None = None, message: str | None = None) -> RuleSpec:
    """Every value at `each` must appear among the values at `within`."""
    return RuleSpec.model_validate(
        {"name": name or f"every {each} in {within}", "kind": "every", "each": each, "in": within, "message": message}
    )


def disjoint(left: str, right: str, *, name: str | None = None, message: str | None = None) -> RuleSpec:
    """No value may appear both at `left` and at `right`."""
    rule_name = name or f"{left} disjoint from {right}"
    return RuleSpec(name=rule_name, kind="disjoint", left=left, right=right, message=message)


def fanout(
    name: str,
    *,
    agents: Mapping[str, AgentDraft],
    merge_into: type[BaseModel] | str | None = None,
    rules: Sequence[RuleSpec] = (),
    ignore: Sequence[str] = (),
    inputs: Mapping[str, JsonValue] | None = None,
    model: str | None = None,
    timeout_s: float | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int = 64,
    budget: Budget | None = None,
    limits: Limits | None = None,
    merge_step: str = "merge",
    min_contributions: int | None = None,
    **input_values: JsonValue,
) -> Plan:
    """Every agent looks at the same inputs at once; one merge step assembles their typed
    contributions into one document and surfaces every disagreement as a conflict. The merge
    (and so the run) fails when fewer than `min_contributions` agents contributed (default:
    every agent must)."""
    steps: list[Step] = []
    for agent_name, draft in agents.items():
        try:
            spec = draft.spec(model)
        except ValueError as e:
            raise ValueError(f"agent {agent_name!r}: {e}") from e
        steps.append(
            Step(
                id=agent_name,
                kind="agent",
                agent=spec,
                prompt=draft.prompt,
                output=draft.output_ref(),
                timeout_s=timeout_s,
                retry=retry or RetryPolicy(),
                verify=draft.verify,
            )
        )
    target = merge_into if merge_into is None or isinstance(merge_into, str) else ref_of(merge_into)
    steps.append(
        Step(
            id=merge_step,
            kind="merge",
            after=tuple(agents),
            merge=MergeSpec(
                target=target, rules=tuple(rules), ignore=tuple(ignore), min_contributions=min_contributions
            ),
        )
    )
    return Plan(
        name=name,
        steps=tuple(steps),
        inputs={**(inputs or {}), **input_values},
        concurrency=concurrency,
        budget=budget or Budget(),
        limits=limits or Limits(),
    )
