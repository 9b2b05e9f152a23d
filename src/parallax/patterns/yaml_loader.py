"""YAML patterns -> Plan IR, with every error located: `file:line:col: field.path: what was expected`.

Three passes, each stopping at the first problem it can place:
1. YAML syntax (PyYAML's own marks);
2. the published JSON Schema (`patterns/schema.py`), with the failing field's position taken
   from the YAML node tree;
3. meaning: references to types, agents and models, cycles, output models that cannot be
   imported; then the Plan's own validation.
`${NAME}` in string values is filled from the environment for non-secret values only: names
that look like secrets (KEY, TOKEN, SECRET, PASSWORD) are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import BaseModel

from parallax.agents.refs import resolve_ref
from parallax.core.errors import PlanError
from parallax.core.plan import Plan
from parallax.core.types import build_type
from parallax.patterns.compile import compile_document
from parallax.patterns.schema import PATTERN_SCHEMA

Path_ = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_VALIDATOR = Draft202012Validator(PATTERN_SCHEMA)


class Located:
    """Where each value of a YAML document came from."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: dict[Path_, tuple[int, int]] = {}

    def at(self, path: Path_) -> str:
        while path and path not in self.marks:
            path = path[:-1]
        line, col = self.marks.get(path, (1, 1))
        return f"{self.file}:{line}:{col}"

    def error(self, path: Path_, message: str) -> PlanError:
        shown = ".".join(str(p) for p in path) or "(top level)"
        return PlanError(f"{self.at(path)}: {shown}: {message}")


def _to_python(node: yaml.Node, path: Path_, where: Located) -> Any:
    where.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                line = key_node.start_mark.line + 1
                raise PlanError(f"{where.file}:{line}:{key_node.start_mark.column + 1}: {key}: duplicate key")
            where.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _to_python(value_node, (*path, key), where)
            where.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), where) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(stream="").construct_object(node, deep=True)


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def parse_yaml(text: str, file: str) -> tuple[Any, Located]:
    where = Located(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PlanError(f"{file}:{line}:{col}: not valid YAML: {e.problem or e}") from e
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control character, ...)
        line, col = _position(text, e.position)
        raise PlanError(f"{file}:{line}:{col}: not valid YAML: {e.reason} (character {e.character!r})") from e
    except yaml.YAMLError as e:
        raise PlanError(f"{file}:1:1: not valid YAML: {e}") from e
    if node is None:
        raise PlanError(f"{file}:1:1: the file is empty; a pattern needs at least pattern, name and agents")
    return _to_python(node, (), where), where


def _expected(error: SchemaError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        return f"{error.message} (allowed: {allowed})" if allowed else error.message
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, schema.get('enum', [])))}"
    if error.validator == "pattern":
        return f"{error.instance!r} does not look right (expected {schema.get('description') or schema['pattern']})"
    if error.validator == "anyOf" and error.absolute_path and error.absolute_path[0] == "types":
        return (
            f"{error.instance!r} is not a field type: use str, int, float, bool, dict, list[...], "
            "a declared type, and ? for optional"
        )
    if error.validator == "oneOf":
        return "a rule needs exactly one of: every+within, disjoint, python"
    return error.message


def _schema_check(data: Any, where: Located) -> None:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        first = min(errors, key=lambda e: where.at(tuple(e.absolute_path)))
        raise where.error(tuple(first.absolute_path), _expected(first))


def _expand_env(value: Any, path: Path_, where: Located, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if _SECRET.search(name):
                raise where.error(
                    path, f"${{{name}}} looks like a secret; grant it to an agent by name (env: [{name}])"
                )
            if name not in environ:
                raise where.error(path, f"${{{name}}} is not set in the environment")
            return environ[name]

        return _ENV.sub(fill, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), where, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), where, environ) for i, v in enumerate(value)]
    return value


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


def compile_pattern(
    text: str,
    file: str = "<pattern>",
    inputs: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    registry: list[dict[str, Any]] | None = None,
) -> Plan:
    data, where = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise where.error((), "a pattern is a mapping with pattern, name and agents")
    _schema_check(data, where)
    data = _expand_env(data, (), where, os.environ if environ is None else environ)
    types: dict[str, dict[str, str]] = data.get("types", {})
    for type_name in types:
        try:
            build_type(type_name, types)
        except PlanError as e:
            raise where.error(("types", type_name), str(e)) from e
    if inputs:
        data["inputs"] = {**data.get("inputs", {}), **inputs}
    return compile_document(data, where, file, types, registry)


def load_pattern(path: str | Path, inputs: Mapping[str, Any] | None = None) -> Plan:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise PlanError(f"{path}: cannot read the pattern: {e.strerror}") from e
    return compile_pattern(text, str(path), inputs)
