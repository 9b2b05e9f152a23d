"""Inline output types: pydantic models built from a plan's `types` table.

    types:
      Finding: {claim: str, evidence: list[str], confidence: float}
      Report:  {findings: list[Finding], summary: str?}

Field types: str, int, float, bool, dict, list[...] of those, another declared type, and a
trailing `?` for optional (default None). The same table always builds the same models.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, create_model

from parallax.core.errors import PlanError

SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict[str, Any]}
_LIST = re.compile(r"^list\[(\w+)\]$")

_cache: dict[tuple[str, str], type[BaseModel]] = {}


def _resolve(
    name: str, field: str, expr: str, table: dict[str, dict[str, str]], built: dict[str, Any], stack: tuple[str, ...]
) -> Any:
    optional = expr.endswith("?")
    base = expr[:-1] if optional else expr
    inner = _LIST.match(base)
    target = inner.group(1) if inner else base
    if target in SCALARS:
        python: Any = SCALARS[target]
    elif target in table:
        python = build_type(target, table, built, stack)
    else:
        raise PlanError(f"type {name}.{field}: unknown type {target!r} (known: {', '.join([*SCALARS, *table])})")
    if inner:
        python = list[python]
    return (python | None, None) if optional else (python, ...)


def build_type(
    name: str, table: dict[str, dict[str, str]], built: dict[str, Any] | None = None, stack: tuple[str, ...] = ()
) -> type[BaseModel]:
    """The model `name` of `table`. Raises PlanError for unknown or self-containing types."""
    built = {} if built is None else built
    if name in built:
        return built[name]  # type: ignore[no-any-return]
    if name in stack:
        raise PlanError(f"type {name} contains itself: {' -> '.join([*stack, name])}")
    if name not in table:
        raise PlanError(f"unknown type {name!r} (declared: {', '.join(table) or 'none'})")
    fields = {f: _resolve(name, f, expr, table, built, (*stack, name)) for f, expr in table[name].items()}
    model: type[BaseModel] = create_model(name, **fields)
    built[name] = model
    return model


def inline_model(plan_hash: str, name: str, table: dict[str, dict[str, str]]) -> type[BaseModel]:
    key = (plan_hash, name)
    model = _cache.get(key)
    if model is None:
        model = _cache[key] = build_type(name, table)
    return model
