"""Merging typed contributions into one document, surfacing every disagreement as a conflict.

Pure: contributions arrive as JSON-able dicts (already validated against their models), and the
result is a dict plus a list of `Conflict`s. Nothing is averaged, picked or resolved silently:
- each contribution goes under its section;
- a field two contributions fill differently is a `disagreement`, and the shared field is left
  unset in the document (the candidates are in the conflict);
- declared rules that fail are `rule` conflicts;
- an input that failed, timed out or was skipped is a `gap`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parallax.core.conflicts import Conflict
from parallax.core.plan import FIELD_PATH, MergeSpec, RuleSpec

PythonRule = Callable[[Mapping[str, Any]], Iterable[Conflict]]

_TOKEN = re.compile(r"([^.\[\]]+)|\[\*\]")

ALWAYS_IGNORED = frozenset({"confidence"})


@dataclass(frozen=True)
class MergeOutcome:
    document: dict[str, Any]
    conflicts: list[Conflict]


def _key(value: Any) -> str:
    """A comparison key: canonical JSON, strings trimmed and case-folded."""
    if isinstance(value, str):
        value = value.strip().casefold()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def parse_path(path: str) -> list[str]:
    """`a.b[*].c` -> ["a", "b", "[*]", "c"]. Raises ValueError for anything else."""
    if not FIELD_PATH.fullmatch(path):
        raise ValueError(f"bad path {path!r}: use dotted names with [*] for every list item, e.g. a.b[*].c")
    return [m.group(0) for m in _TOKEN.finditer(path)]


def resolve_path(document: Mapping[str, Any], path: str) -> tuple[list[Any], bool]:
    """All values at `path`, and whether the path's first segment exists at all."""
    tokens = parse_path(path)
    root_present = tokens[0] in document and document[tokens[0]] is not None
    current: list[Any] = [document]
    for token in tokens:
        nxt: list[Any] = []
        for value in current:
            if token == "[*]":
                if isinstance(value, list):
                    nxt.extend(value)
            elif isinstance(value, Mapping) and value.get(token) is not None:
                nxt.append(value[token])
        current = nxt
    return current, root_present


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; lists and scalars are leaves, nested objects are walked."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, f"{path}."))
        elif item is not None:
            out[path] = item
    return out


def gap_conflicts(
    gaps: Mapping[str, str], consequence: str, step: str | None, sections: Mapping[str, str] | None = None
) -> list[Conflict]:
    """One `gap` conflict per input that produced nothing: who, why, and what it means here."""
    return [
        Conflict(
            kind="gap",
            path=(sections or {}).get(name, name),
            message=f"{name} {reason}; {consequence}",
            agents=(name,),
            step=step,
        )
        for name, reason in sorted(gaps.items())
    ]


def merge_contributions(
    contributions: Mapping[str, Mapping[str, Any]],
    gaps: Mapping[str, str],
    spec: MergeSpec,
    *,
    target_fields: Iterable[str] = (),
    python_rules: Mapping[str, PythonRule] | None = None,
    step: str | None = None,
) -> MergeOutcome:
    """Assemble `contributions` (input step -> output) into one document.

    `gaps` maps each input that produced nothing to why. `target_fields` are the top-level
    fields of the target model: those that are not sections are filled by agreement.
    """
    conflicts: list[Conflict] = []
    section_of = {name: spec.sections.get(name, name) for name in [*contributions, *gaps]}
    document: dict[str, Any] = {}

    conflicts.extend(gap_conflicts(gaps, "its contribution is missing", step, section_of))
    for name in sorted(contributions):
        document[section_of[name]] = dict(contributions[name])

    ignored = ALWAYS_IGNORED | set(spec.ignore)
    by_path: dict[str, dict[str, Any]] = {}
    for name in sorted(contributions):
        for path, value in flatten(contributions[name]).items():
            if path not in ignored and path.split(".")[-1] not in ignored:
                by_path.setdefault(path, {})[name] = value
    agreed: dict[str, Any] = {}
    for path in sorted(by_path):
        candidates = by_path[path]
        if len(candidates) < 2:
            if len(candidates) == 1:
                agreed[path] = next(iter(candidates.values()))
            continue
        if len({_key(v) for v in candidates.values()}) > 1:
            shown = "; ".join(f"{agent}: {json.dumps(v, default=str)}" for agent, v in candidates.items())
            conflicts.append(
                Conflict(
                    kind="disagreement",
                    path=path,
                    message=f"filled differently by {len(candidates)} contributions ({shown})",
                    agents=tuple(candidates),
                    values=dict(candidates),
                    step=step,
                )
            )
        else:
            agreed[path] = next(iter(candidates.values()))

    sections = set(section_of.values())
    for field_name in target_fields:
        if field_name not in sections and field_name in agreed:
            document[field_name] = agreed[field_name]

    for rule in spec.rules:
        conflicts.extend(_check_rule(rule, document, python_rules or {}, step))
    return MergeOutcome(document, conflicts)


def _check_rule(
    rule: RuleSpec, document: Mapping[str, Any], python_rules: Mapping[str, PythonRule], step: str | None
) -> list[Conflict]:
    if rule.kind == "python":
        fn = python_rules.get(rule.name)
        if fn is None:
            raise KeyError(f"python rule {rule.name!r} was not resolved")
        return [c.model_copy(update={"step": step, "rule": c.rule or rule.name}) for c in fn(document)]
    first, second = (rule.each, rule.in_) if rule.kind == "every" else (rule.left, rule.right)
    assert first is not None
    assert second is not None
    paths = (first, second)
    (left, left_present), (right, right_present) = (resolve_path(document, p) for p in paths)
    present = (left_present, right_present)
    missing_roots = [_root(p) for p, ok in zip(paths, present, strict=True) if not ok]
    if missing_roots:
        return [
            Conflict(
                kind="rule",
                path=rule.name,
                rule=rule.name,
                message=f"cannot be checked: {', '.join(missing_roots)} contributed nothing",
                step=step,
            )
        ]
    right_keys = {_key(v) for v in right}
    if rule.kind == "every":
        offending = [v for v in left if _key(v) not in right_keys]
        default = f"{rule.each} has values missing from {rule.in_}"
    else:
        offending = [v for v in left if _key(v) in right_keys]
        default = f"{rule.left} and {rule.right} share values"
    if not offending:
        return []
    unique: dict[str, Any] = {}
    for value in offending:
        unique.setdefault(_key(value), value)
    listed = ", ".join(json.dumps(v, default=str) for v in unique.values())
    agents = tuple(sorted({_root(p) for p in paths}))
    return [
        Conflict(
            kind="rule",
            path=rule.name,
            rule=rule.name,
            message=f"{rule.message or default}: {listed}",
            agents=agents,
            values={"offending": list(unique.values())},
            step=step,
        )
    ]


def _root(path: str) -> str:
    return path.split(".")[0].split("[")[0]


def count_votes(
    contributions: Mapping[str, Mapping[str, Any]],
    confidences: Mapping[str, float | None],
    gaps: Mapping[str, str],
    field: str,
    *,
    weighted: bool,
    step: str | None = None,
) -> MergeOutcome:
    """The winning value of `field` among the contributions, its agreement score, and the
    dissent as a conflict. A tie has no winner (and is a conflict). A contribution without the
    field, and every gap, counts as not voting."""
    tallies: dict[str, float] = {}
    values: dict[str, Any] = {}
    ballots: dict[str, Any] = {}
    for name in sorted(contributions):
        found, _ = resolve_path(contributions[name], field)
        if not found:
            continue
        value = found[0]
        key = _key(value)
        values.setdefault(key, value)
        ballots[name] = value
        weight = (confidences.get(name) or 0.0) if weighted else 1.0
        tallies[key] = tallies.get(key, 0.0) + weight
    conflicts = gap_conflicts(gaps, "it did not vote", step)
    total = sum(tallies.values())
    ranked = sorted(tallies.items(), key=lambda kv: kv[1], reverse=True)
    winner: Any = None
    agreement = 0.0
    if ranked and total > 0 and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        winner = values[ranked[0][0]]
        agreement = ranked[0][1] / total
    if len(ranked) > 1:
        verdict = "a tie: no winner" if winner is None else f"{agreement:.0%} agreement"
        conflicts.append(
            Conflict(
                kind="disagreement",
                path=field,
                message=f"the vote split ({verdict})",
                agents=tuple(ballots),
                values=dict(ballots),
                step=step,
            )
        )
    document = {
        "field": field,
        "winner": winner,
        "agreement": round(agreement, 4),
        "weighted": weighted,
        "tally": {json.dumps(values[k], default=str): round(v, 4) for k, v in ranked},
        "votes": ballots,
    }
    return MergeOutcome(document, conflicts)
