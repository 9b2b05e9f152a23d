"""The published JSON Schema of Parallax's YAML patterns (`parallax schema` prints it).

Point an editor at it with a first line `# yaml-language-server: $schema=parallax-pattern.json`
after `parallax schema > parallax-pattern.json`.
"""

from __future__ import annotations

from typing import Any

FIELD_PATH = r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*|\[\*\])*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
TYPE_EXPR = r"^(str|int|float|bool|dict|list\[(str|int|float|bool|dict)\])\??$"

_retry: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "backoff_s": {"type": "number", "minimum": 0},
        "max_backoff_s": {"type": "number", "minimum": 0},
        "jitter": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

_agent: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "An agent: llm (default), python, command or cli.",
    "properties": {
        "kind": {"enum": ["llm", "python", "command", "cli"], "default": "llm"},
        "prompt": {"type": "string", "description": "A template: {{input.x}}, {{steps.<id>.output}}"},
        "output": {"type": "string", "description": "An inline type name from `types`, or module:Class"},
        "model": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+:.+$|^test$"},
        "base_url": {"type": "string", "format": "uri"},
        "instructions": {"type": "string"},
        "ref": {"type": "string", "pattern": r"^.+:[A-Za-z_][\w.]*$"},
        "command": {"type": "string", "minLength": 1},
        "preset": {"enum": ["claude", "codex", "gemini", "aider", "opencode"]},
        "env": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
        "settings": {"type": "object"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "retry": _retry,
        "verify": {"type": "string"},
        "after": {"type": "array", "items": {"type": "string", "pattern": NAME}},
        "reads": {"type": "array", "items": {"type": "string"}},
        "cache": {"type": "boolean"},
        "confidence": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "accept": {"type": "number", "minimum": 0, "maximum": 1},
                "retry_below": {"type": "number", "minimum": 0, "maximum": 1},
                "escalate_below": {"type": "number", "minimum": 0, "maximum": 1},
                "escalate_model": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+:.+$"},
            },
            "dependentRequired": {"escalate_below": ["escalate_model"]},
        },
    },
}

_rule: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "every": {"type": "string", "pattern": FIELD_PATH},
        "within": {"type": "string", "pattern": FIELD_PATH},
        "disjoint": {"type": "array", "items": {"type": "string", "pattern": FIELD_PATH}, "minItems": 2, "maxItems": 2},
        "python": {"type": "string", "pattern": r"^.+:[A-Za-z_][\w.]*$"},
        "message": {"type": "string"},
    },
    "oneOf": [{"required": ["every", "within"]}, {"required": ["disjoint"]}, {"required": ["python"]}],
}

_merge: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "into": {"type": "string", "description": "An inline type name, or module:Class"},
        "rules": {"type": "array", "items": _rule},
        "ignore": {"type": "array", "items": {"type": "string"}},
        "after": {"type": "array", "items": {"type": "string", "pattern": NAME}},
    },
}

PATTERN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://parallax.dev/schema/pattern.json",
    "title": "Parallax pattern",
    "type": "object",
    "additionalProperties": False,
    "required": ["pattern", "name", "agents"],
    "properties": {
        "pattern": {"enum": ["fanout", "pipeline", "vote"], "description": "fanout: all agents at once, then a merge; "
                    "pipeline: agents in order, each after the one before (or as `after` says); "
                    "vote: all agents at once, then a vote over one field"},
        "vote": {
            "type": "object",
            "additionalProperties": False,
            "required": ["field"],
            "properties": {
                "field": {"type": "string", "pattern": FIELD_PATH},
                "weighted": {"type": "boolean", "description": "weigh each vote by its confidence"},
            },
        },
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "model": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+:.+$|^test$"},
        "inputs": {"type": "object"},
        "concurrency": {"type": "integer", "minimum": 1},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "retry": _retry,
        "budget": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_tokens": {"type": "integer", "exclusiveMinimum": 0},
                "max_cost_usd": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "types": {
            "type": "object",
            "description": "Inline output types: a name, then field: type "
            "(str, int, float, bool, dict, list[...]; ? = optional)",
            "propertyNames": {"pattern": r"^[A-Z][A-Za-z0-9_]*$"},
            "additionalProperties": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {
                    "anyOf": [{"type": "string", "pattern": TYPE_EXPR}, {"type": "string", "pattern": r"^[A-Z]\w*\??$"},
                              {"type": "string", "pattern": r"^list\[[A-Z]\w*\]\??$"}],
                },
            },
        },
        "agents": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": NAME},
            "additionalProperties": _agent,
        },
        "merge": _merge,
    },
}  # fmt: skip
