"""`python` agents: an async (or plain) callable that takes the AgentContext.

The callable returns a pydantic model, any JSON-able value, or an AgentResult. A model with a
`confidence` field self-reports its confidence.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel

from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.agents.refs import resolve_ref
from parallax.core.errors import PlanError
from parallax.core.plan import AgentSpec


def to_result(value: Any) -> AgentResult:
    if isinstance(value, AgentResult):
        if isinstance(value.output, BaseModel):
            model = value.output
            return AgentResult(model.model_dump(mode="json"), value.confidence, value.usage, model)
        return value
    if isinstance(value, BaseModel):
        own = None
        if "confidence" in type(value).model_fields:
            confidence = getattr(value, "confidence", None)
            own = float(confidence) if isinstance(confidence, int | float) else None
        return AgentResult(value.model_dump(mode="json"), own, model=value)
    return AgentResult(value)


class PythonAgent(Agent):
    _resolved: ClassVar[dict[str, Callable[..., Any]]] = {}

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        assert spec.ref is not None
        fn = self._resolved.get(spec.ref)
        if fn is None:
            fn = resolve_ref(spec.ref)
            if not callable(fn):
                raise PlanError(f"python agent {spec.ref!r} is not callable")
            self._resolved[spec.ref] = fn
        self.fn = fn

    async def run(self, ctx: AgentContext) -> AgentResult:
        value = self.fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        return to_result(value)
