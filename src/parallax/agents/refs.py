"""Resolving `module:attr` and `path/to/file.py:attr` references to Python objects.

A file reference is loaded once per absolute path under a stable module name, so the models
and functions it defines are the same objects wherever they are referenced in one process.
`ref_of(obj)` goes the other way: the reference that resolves back to `obj`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from parallax.core.errors import PlanError
from parallax.core.plan import Plan
from parallax.core.types import inline_model

_FILE_MODULE_PREFIX = "parallax_user_"
_file_of_module: dict[str, Path] = {}


def module_name_for(path: Path) -> str:
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    return f"{_FILE_MODULE_PREFIX}{stem}_{digest}"


def load_file(path: Path) -> ModuleType:
    """Import a Python file by path (once); its directory goes on sys.path for its own imports."""
    resolved = path.resolve()
    if not resolved.is_file():
        raise PlanError(f"no such Python file: {path}")
    name = module_name_for(resolved)
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PlanError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _file_of_module[name] = resolved
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise PlanError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def resolve_ref(ref: str) -> Any:
    """The object a reference names. Raises PlanError saying which part was not found."""
    target, sep, attr_path = ref.rpartition(":")
    if not sep or not target or not attr_path:
        raise PlanError(f"reference {ref!r} must look like module:attr or path/to/file.py:attr")
    if target.endswith(".py") or "/" in target:
        module = load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise PlanError(f"reference {ref!r}: cannot import module {target!r} ({e})") from e
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PlanError(f"reference {ref!r}: {target} has no attribute {attr_path!r}") from None
    return obj


def ref_of(obj: Any) -> str:
    """A reference that `resolve_ref` turns back into `obj` (functions and classes defined at
    module level). Raises PlanError for lambdas and local definitions, which cannot be found
    again after a restart."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname:
        raise PlanError(
            f"{obj!r} cannot be referenced by name (define it at module level, not as a lambda or local function)"
        )
    path = _file_of_module.get(module_name)
    if path is not None:
        try:
            shown = path.relative_to(Path.cwd())
        except ValueError:
            shown = path
        return f"{shown}:{qualname}"
    if module_name == "__main__":
        main = sys.modules["__main__"]
        file = getattr(main, "__file__", None)
        if file:
            return f"{Path(file).resolve()}:{qualname}"
        raise PlanError(f"{qualname} is defined in an interactive session and cannot be referenced by name")
    return f"{module_name}:{qualname}"


_models: dict[str, type[BaseModel]] = {}


def resolve_model(ref: str, plan: Plan | None = None, plan_hash: str = "") -> type[BaseModel]:
    """A `module:Class` reference, or `types:Name` from the plan's inline types."""
    if ref.startswith("types:"):
        if plan is None:
            raise PlanError(f"{ref!r} names an inline type but no plan was given")
        return inline_model(plan_hash or plan.content_hash(), ref.removeprefix("types:"), plan.types)
    model = _models.get(ref)
    if model is None:
        obj = resolve_ref(ref)
        if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
            raise PlanError(f"{ref!r} is not a pydantic model class")
        model = _models[ref] = obj
    return model
