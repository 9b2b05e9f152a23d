"""Agent output as a person reads it in one terminal line: streamed text as text, a structured
answer (streamed as JSON, possibly half-written) as its fields, never a raw JSON tail.

Pure functions, used by the live lanes (`cli/lanes.py`).
"""

from __future__ import annotations

import json
import re
from typing import Any

# The fields that say what an answer is, in the order a reader wants them first.
LEAD_FIELDS = (
    "position",
    "summary",
    "verdict",
    "answer",
    "actions",
    "recommendation",
    "decision",
    "text",
    "title",
    "result",
)
SHOWN_APART = ("confidence",)  # the lanes show it in a column of its own
_PAIR = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*("(?:[^"\\]|\\.)*("|$)|-?\d+(?:\.\d+)?|true|false|null)', re.S)
_SPACE = re.compile(r"\s+")


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _action(action: dict[str, Any]) -> str:
    """A moderator's action in a few words: `steer builders`, `fork builders -> b2`, `conclude`."""
    name = str(action.get("action", "?"))
    target = (
        action.get("to") or action.get("stream") or action.get("cohort") or action.get("phase") or action.get("name")
    )
    into = action.get("into")
    streams = action.get("streams")
    if isinstance(streams, list):
        target = "+".join(str(s) for s in streams)
    return " ".join(str(x) for x in (name, target, f"-> {into}" if into else None) if x)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) and "action" in v for v in value):
        return ", ".join(_action(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "; ".join(_scalar(v) for v in value if not isinstance(v, dict | list))
    if isinstance(value, dict):
        return ""  # nested objects are left to `parallax inspect`
    return json.dumps(value)


def fields_line(data: dict[str, Any]) -> str:
    """A dict as `lead field's value · key: value · ...`, leads first, empty values left out."""
    keys = sorted(data, key=lambda k: (LEAD_FIELDS.index(k) if k in LEAD_FIELDS else len(LEAD_FIELDS), 0))
    parts: list[str] = []
    for key in keys:
        if data[key] is None or key in SHOWN_APART:
            continue
        shown = _one_line(_scalar(data[key]))
        if not shown:
            continue
        parts.append(shown if key in LEAD_FIELDS[:1] or (key in LEAD_FIELDS and not parts) else f"{key}: {shown}")
    return " · ".join(parts)


def partial_fields(text: str) -> dict[str, Any]:
    """The key/value pairs a half-written JSON object already holds (a string still being
    written is taken as far as it goes)."""
    found: dict[str, Any] = {}
    for match in _PAIR.finditer(text):
        key, raw, closed = match.group(1), match.group(2), match.group(3)
        if raw.startswith('"'):
            body = raw[1:-1] if closed else raw[1:]
            try:
                found[key] = json.loads(f'"{body}"')
            except ValueError:  # cut inside an escape
                found[key] = body.replace("\\n", " ").replace('\\"', '"')
        else:
            found[key] = json.loads(raw)
    return found


def readable(streamed: str) -> str:
    """What an agent has streamed so far, as one line: text stays text; a JSON object (a
    structured answer being written) shows its fields."""
    stripped = streamed.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = partial_fields(stripped)
        if isinstance(value, dict):
            return fields_line(value)
        if isinstance(value, list):
            return _one_line(_scalar(value))
    return _one_line(streamed)


def output_line(output: Any) -> str:
    """A recorded output as one line."""
    if isinstance(output, dict):
        return fields_line(output)
    if isinstance(output, str):
        return readable(output)
    return _one_line(_scalar(output))
