"""Loading a run target: the thing `parallax run` and `parallax compile` are pointed at.

    path/to/pattern.yaml    a YAML pattern (see patterns/yaml_loader.py and `parallax schema`)
    path/to/file.py:attr    attr is a Plan, or a callable returning one
    path/to/file.py         the file's `plan` attribute
    package.module:attr     the same, by import path

A callable is called with the `--input` values its signature accepts (by keyword), and only
once it is known to be a plan builder: a Python function defined in the file or module the
target names (not one imported there, such as `os.system`), whose return annotation, if it has
one, is Plan; a target by import path (`package.module:attr`) must be annotated `-> Plan`. So a
target such as `os:system` or `subprocess:run` is refused before anything is called.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from parallax.agents.refs import module_name_for, resolve_ref
from parallax.core.errors import PlanError
from parallax.core.plan import Plan
from parallax.model_choice import ModelChoice
from parallax.patterns.yaml_loader import load_pattern


def load_target(target: str, inputs: Mapping[str, Any] | None = None, *, models: ModelChoice | None = None) -> Plan:
    """A target's Plan. `models` applies to YAML patterns (a Python target names its models in
    code)."""
    inputs = dict(inputs or {})
    if target.endswith((".yaml", ".yml")):
        return load_pattern(target, inputs, models=models)
    ref = target
    if ":" not in target.rsplit("/", 1)[-1]:
        if not target.endswith(".py"):
            raise PlanError(f"target {target!r}: expected pattern.yaml, file.py, file.py:attr or module:attr")
        ref = f"{target}:plan"
    if ref.split(":", 1)[0].endswith(".py") and not Path(ref.rsplit(":", 1)[0]).is_file():
        raise PlanError(f"target {target!r}: no such file {ref.rsplit(':', 1)[0]!r}")
    obj = resolve_ref(ref)
    if isinstance(obj, Plan):
        plan = obj
        if inputs:
            plan = plan.model_copy(update={"inputs": {**plan.inputs, **inputs}})
            plan = Plan.model_validate(plan.model_dump(mode="json", by_alias=True))
        return plan
    if callable(obj):
        _check_plan_function(target, ref, obj)
        params = inspect.signature(obj).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in inputs if k not in params and not takes_all]
        if unknown:
            raise PlanError(
                f"target {target!r} takes no input named {', '.join(unknown)}; it takes {', '.join(params)}"
            )
        try:
            result = obj(**inputs)
        except (ValueError, ValidationError) as e:
            raise PlanError(f"target {target!r} could not build its plan: {e}") from e
        if not isinstance(result, Plan):
            raise PlanError(f"target {target!r} returned {type(result).__name__}, not a Plan")
        return result
    raise PlanError(f"target {target!r} is a {type(obj).__name__}, not a Plan or a function returning one")


def _check_plan_function(target: str, ref: str, obj: Any) -> None:
    """Refuse, before calling it, anything that is not a plan-building function of the target's own."""
    module_part = ref.rsplit(":", 1)[0]
    by_path = module_part.endswith(".py") or "/" in module_part
    if not inspect.isfunction(obj):
        raise PlanError(f"target {target!r} is a {type(obj).__name__}, not a Plan or a function returning one")
    defined_in = getattr(obj, "__module__", None)
    expected = module_name_for(Path(module_part).resolve()) if by_path else module_part
    if defined_in != expected:
        raise PlanError(
            f"target {target!r} names {obj.__qualname__} from {defined_in}, not a function defined in {module_part}"
        )
    try:
        returns = typing.get_type_hints(obj).get("return", inspect.Signature.empty)
    except Exception:  # an annotation that does not resolve says nothing we can trust
        returns = obj.__annotations__.get("return", inspect.Signature.empty)
    if returns is inspect.Signature.empty:
        if not by_path:
            raise PlanError(f"target {target!r}: a function named by import path must be annotated `-> Plan`")
        return
    if not (returns is Plan or returns == "Plan" or (isinstance(returns, type) and issubclass(returns, Plan))):
        raise PlanError(f"target {target!r} is annotated to return {returns!r}, not a Plan")
