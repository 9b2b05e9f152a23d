"""YAML patterns -> Plan IR, with every error located: `file:line:col: field.path: what was expected`.

Three passes, each stopping at the first problem it can place:
1. YAML syntax (PyYAML's own marks), within bounds: composition counts every node the document
   expands to (an alias counts as the whole subtree it repeats) and refuses more than
   `MAX_NODES`, nesting deeper than `MAX_DEPTH`, and an alias inside the node it names, at the
   place it happens and before anything is expanded; so a few hundred bytes of anchors cannot
   take seconds or gigabytes. Every value must be JSON data: strings without NUL or unpaired
   surrogates, finite numbers, integers within 64 bits, plain keys (no dates, binaries, tags);
2. the published JSON Schema (`patterns/schema.py`), with the failing field's position taken
   from the YAML node tree;
3. meaning: references to types, agents and models, cycles, output models that cannot be
   imported, names that would collide with the step ids a run generates; then the Plan's own
   validation.
`${NAME}` in string values is filled from the environment only for names the pattern lists in
`env_expand: [NAME, ...]`; an unlisted `${NAME}` is an error. Names that look like secrets
(see `_SECRET`) and values that carry credentials (`scheme://user:pass@...`) are refused even
when listed: a plan is recorded on the log and printed by `parallax compile`, so no secret may
end up in one; grant secrets to an agent by name instead (`env: [NAME]`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from parallax.core.errors import PlanError
from parallax.core.plan import Plan, Step
from parallax.core.types import build_type
from parallax.model_choice import ModelChoice
from parallax.patterns.cohorts import compile_cohorts, compile_orgchart
from parallax.patterns.compile import Compiler, compile_tasks
from parallax.patterns.located import Located, Path_, shown
from parallax.patterns.schema import PATTERN_SCHEMA

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Names refused for `${NAME}` even when listed in env_expand: whatever holds a key, a token, a
# password (PASS, PWD), credentials, auth (AUTH, OAUTH, AUTHORIZATION; not AUTHOR), a personal access token
# (GITHUB_PAT), a session or cookie, a webhook URL, a data source (DSN, DATABASE_URL, REDIS_URL).
_SECRET = re.compile(
    r"KEY|TOKEN|SECRET|PASS|PWD|CREDENTIAL|CREDS|AUTH(?!ORS?(?:_|$))|COOKIE|SESSION|WEBHOOK|HOOK_UR[LI]|DSN|SALT"
    r"|PRIVATE"
    r"|(?:^|_)PAT(?:_|$)"
    r"|(?:^|_)(?:DATABASE|DB|REDIS|MONGO\w*|POSTGRES\w*|PG|MYSQL|MARIADB|AMQP|RABBITMQ|BROKER|CONN\w*|SMTP)_UR[LI]$",
    re.IGNORECASE,
)
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})  # the working directories, not passwords
# Values refused whatever their name: a URL with a password in it, well-known token shapes, a PEM key.
_SECRET_VALUE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@"
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}|\bglpat-[\w\-]{20,}"
    r"|\bsk-[\w\-]{20,}|\bxox[abprs]-[\w\-]{10,}|\bAKIA[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_VALIDATOR = Draft202012Validator(PATTERN_SCHEMA)

MAX_NODES = 100_000  # nodes a document may expand to, aliases counted in full
MAX_DEPTH = 64  # nested mappings and sequences
_INT_RANGE = (-(2**63), 2**63 - 1)  # what every store and JSON encoder on the way can hold
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a secret."""
    return name.upper() not in _NOT_SECRET and _SECRET.search(name) is not None


class _Refused(Exception):
    """A document refused while it was being composed: too big, too deep, or self-referential."""

    def __init__(self, mark: Any, path: Path_, message: str) -> None:
        super().__init__(message)
        self.line: int = mark.line + 1 if mark is not None else 1
        self.column: int = mark.column + 1 if mark is not None else 1
        self.path = path
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting as it composes. Every node counts once, and an alias counts
    as every node of the subtree it repeats (known when the anchored node was finished), so the
    count is the size of the fully expanded document and a bomb is refused at its first alias
    past the budget, having built nothing bigger than its own text. Depth is counted the same
    way: an alias reaches as deep as its anchored node does, from where it stands. An alias to a
    node that is still open (`&a [*a]`) would be infinite and is refused."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.nodes = 0  # nodes of the expanded document so far
        self.depth = 0  # collections open around the node being composed
        self.deepest = 0  # the deepest level reached inside the node being composed
        self.path: list[str | int] = []
        self.open_anchors: set[str] = set()
        self.expanded: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) it expands to

    def refuse(self, mark: Any, message: str) -> _Refused:
        return _Refused(mark, tuple(self.path), message)

    def count(self, nodes: int, mark: Any, what: str) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise self.refuse(mark, f"{what} takes the document past {MAX_NODES:,} nodes (aliases count in full)")

    def reach(self, level: int, mark: Any, what: str) -> None:
        self.deepest = max(self.deepest, level)
        if level > MAX_DEPTH:
            raise self.refuse(mark, f"{what} nests deeper than {MAX_DEPTH} levels")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if parent is None:  # the document itself
            return self._compose(parent, index)
        self.path.append(
            index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else "?"
        )
        try:
            return self._compose(parent, index)
        finally:
            self.path.pop()

    def _compose(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            anchor = str(event.anchor)
            if anchor in self.open_anchors:
                raise self.refuse(event.start_mark, f"alias *{anchor} is inside the node it names (a recursive alias)")
            if anchor in self.expanded:
                nodes, levels = self.expanded[anchor]
                self.count(nodes, event.start_mark, f"alias *{anchor}")
                self.reach(self.depth + levels, event.start_mark, f"alias *{anchor}")
            return super().compose_node(parent, index)
        self.count(1, event.start_mark, "this value")
        first = self.nodes - 1
        outer_deepest, self.deepest = self.deepest, self.depth
        anchor = event.anchor
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            self.depth += 1
            self.reach(self.depth, event.start_mark, "this value")
            if anchor is not None:
                self.open_anchors.add(anchor)
        node = super().compose_node(parent, index)
        if collection:
            self.depth -= 1
            self.open_anchors.discard(anchor)
        if anchor is not None:
            self.expanded[anchor] = (self.nodes - first, self.deepest - self.depth)
        self.deepest = max(outer_deepest, self.deepest)
        return node


def _scalar_problem(value: Any) -> str | None:
    """Why a parsed value cannot be plan data, or None when it can."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        low, high = _INT_RANGE
        return None if low <= value <= high else "an integer out of range (at most 64 bits)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, str):
        bad = _BAD_CHARACTER.search(value)
        if bad is None:
            return None
        what = "a NUL character" if bad.group() == "\x00" else f"{bad.group()!r}, which is not valid UTF-8"
        return f"{what} at position {bad.start()} of a string"
    kind = {"bytes": "binary value", "date": "date", "datetime": "timestamp"}.get(type(value).__name__, "value")
    return f"a {kind} is not plain data (quote it to make it a string)"


def check_data(value: Any, where: str) -> None:
    """Refuse data from outside (an --input-file, ...) that a plan cannot hold: nesting past
    MAX_DEPTH, non-finite numbers, integers past 64 bits, NUL or unpaired surrogates."""
    stack: list[tuple[Any, Path_]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise PlanError(f"{where}: {shown(path)}: nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, inner in item.items():
                problem = _scalar_problem(key)
                if problem:
                    raise PlanError(f"{where}: {shown(path)}: a key holds {problem}")
                stack.append((inner, (*path, key)))
        elif isinstance(item, list):
            stack.extend((inner, (*path, i)) for i, inner in enumerate(item))
        else:
            problem = _scalar_problem(item)
            if problem:
                raise PlanError(f"{where}: {shown(path)}: {problem}")


def _to_python(node: yaml.Node, path: Path_, where: Located, loader: yaml.SafeLoader) -> Any:
    """The node as plain data (composition already bounded its size and depth)."""
    mark = (node.start_mark.line + 1, node.start_mark.column + 1)
    where.marks[path] = mark
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise PlanError(f"{where.file}:{line}:{col}: {shown(path)}: a key must be a plain name, not a "
                                f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}")  # fmt: skip
            key = str(key_node.value)
            problem = _scalar_problem(key)
            if problem:
                raise PlanError(f"{where.file}:{line}:{col}: {shown(path)}: a key holds {problem}")
            if key in out:
                raise PlanError(f"{where.file}:{line}:{col}: {key}: duplicate key")
            where.marks[(*path, key)] = (line, col)
            out[key] = _to_python(value_node, (*path, key), where, loader)
            where.marks[(*path, key)] = (line, col)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), where, loader) for i, item in enumerate(node.value)]
    try:
        value = loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as e:
        reason = e.problem if isinstance(e, yaml.MarkedYAMLError) and e.problem else str(e).splitlines()[0]
        raise PlanError(f"{where.at(path)}: {shown(path)}: cannot read this value: {reason}") from e
    problem = _scalar_problem(value)
    if problem:
        raise where.error(path, problem)
    return value


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def parse_yaml(text: str, file: str) -> tuple[Any, Located]:
    """The document as plain data and where each value came from; refuses what `_BoundedLoader`
    and `_scalar_problem` refuse, with a located error."""
    where = Located(file)
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
    except _Refused as e:
        raise PlanError(f"{file}:{e.line}:{e.column}: {shown(e.path)}: {e.message}; refused") from None
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
    try:
        return _to_python(node, (), where, loader), where
    finally:
        loader.dispose()


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
    if error.validator == "oneOf" and "rules" in error.absolute_path:
        return "a rule needs exactly one of: every+within, disjoint, python"
    return error.message


def _error_path(error: SchemaError) -> Path_:
    """Where a schema error belongs: a refused key (`propertyNames`) is placed at the key itself."""
    path = tuple(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        return (*path, error.instance)
    return path


def _schema_check(data: Any, where: Located) -> None:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        first = min(errors, key=lambda e: where.position(_error_path(e)))
        raise where.error(_error_path(first), _expected(first))


def _expand_env(value: Any, path: Path_, where: Located, environ: Mapping[str, str], listed: set[str]) -> Any:
    if isinstance(value, str):

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if looks_secret(name):
                raise where.error(
                    path, f"${{{name}}} looks like a secret; grant it to an agent by name (env: [{name}])"
                )
            if name not in listed:
                raise where.error(
                    path, f"${{{name}}} is not listed in env_expand; add `env_expand: [{name}]` to fill it in"
                )
            if name not in environ:
                raise where.error(path, f"${{{name}}} is not set in the environment")
            filled = environ[name]
            if _BAD_CHARACTER.search(filled):
                raise where.error(path, f"${{{name}}} is not valid UTF-8 in the environment")
            if _SECRET_VALUE.search(filled):
                raise where.error(path, f"${{{name}}} holds what looks like a credential; grant it by name (env:)")
            return filled

        return _ENV.sub(fill, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), where, environ, listed) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), where, environ, listed) for i, v in enumerate(value)]
    return value


def _env_names(data: dict[str, Any], where: Located) -> set[str]:
    """`env_expand`: the names `${NAME}` may fill in; refused when one looks like a secret."""
    names: list[str] = data.get("env_expand", [])
    for i, name in enumerate(names):
        if looks_secret(name):
            message = f"{name} looks like a secret and is never filled into a plan; grant it by name (env: [{name}])"
            raise where.error(("env_expand", i), message)
    return set(names)


def compile_document(
    data: dict[str, Any],
    where: Located,
    file: str,
    types: dict[str, dict[str, str]],
    registry: list[dict[str, Any]] | None = None,
    models: ModelChoice | None = None,
    model_reasons: dict[str, tuple[str, str]] | None = None,
) -> Plan:
    """A parsed, schema-checked and env-expanded document -> its Plan, by its pattern's compiler
    (`patterns/compile.py`, `patterns/cohorts.py`); a breakout's own pattern file is loaded with
    `load_pattern`."""
    compiler = Compiler(data, where, file, types, lambda path: load_pattern(path, models=models))
    compiler.registry = registry
    if models is not None:
        compiler.models = models
    compiler.check_reserved()
    builders: dict[str, Callable[[], list[Step]]] = {
        "fanout": compiler.fanout_like,
        "pipeline": compiler.fanout_like,
        "vote": compiler.fanout_like,
        "review": compiler.review,
        "consensus": compiler.consensus,
        "cascade": compiler.cascade,
        "mapreduce": compiler.mapreduce,
        "cohorts": lambda: compile_cohorts(compiler),
        "orgchart": lambda: compile_orgchart(compiler),
        "tasks": lambda: compile_tasks(compiler),
    }
    steps = builders[data["pattern"]]()
    if data["pattern"] not in ("fanout", "pipeline", "vote"):
        steps += compiler.approvals(steps)
    unmatched = compiler.models.unmatched(compiler.model_names)
    if unmatched:
        known = ", ".join(sorted(compiler.model_names)) or "none"
        raise PlanError(
            f"--model {unmatched[0]}=…: no llm or coder agent of {file} answers to {unmatched[0]!r} (known: {known})"
        )
    if model_reasons is not None:
        model_reasons.update(compiler.model_reasons)
    return compiler.plan(steps)


def compile_pattern(
    text: str,
    file: str = "<pattern>",
    inputs: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    registry: list[dict[str, Any]] | None = None,
    *,
    models: ModelChoice | None = None,
    model_reasons: dict[str, tuple[str, str]] | None = None,
) -> Plan:
    """A YAML pattern's Plan. `models`: the command's --model and the configured default, for
    llm/coder agents that name none (`parallax.model_choice`); `model_reasons`, when given, is
    filled with each llm/coder step's model and why."""
    data, where = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise where.error((), "a pattern is a mapping with pattern, name and agents")
    _schema_check(data, where)
    listed = _env_names(data, where)
    data = _expand_env(data, (), where, os.environ if environ is None else environ, listed)
    types: dict[str, dict[str, str]] = data.get("types", {})
    for type_name in types:
        try:
            build_type(type_name, types)
        except PlanError as e:
            raise where.error(("types", type_name), str(e)) from e
    if inputs:
        data["inputs"] = {**data.get("inputs", {}), **inputs}
    return compile_document(data, where, file, types, registry, models, model_reasons)


def load_pattern(
    path: str | Path,
    inputs: Mapping[str, Any] | None = None,
    *,
    models: ModelChoice | None = None,
    model_reasons: dict[str, tuple[str, str]] | None = None,
) -> Plan:
    if "\x00" in str(path):
        raise PlanError(f"{str(path)!r}: a path cannot hold a NUL character")
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PlanError(f"{path}: cannot read the pattern: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line, col = before.count(b"\n") + 1, e.start - before.rfind(b"\n")
        raise PlanError(f"{path}:{line}:{col}: not UTF-8 (byte {raw[e.start]:#04x}); a pattern is UTF-8 text") from None
    return compile_pattern(text, str(path), inputs, models=models, model_reasons=model_reasons)
