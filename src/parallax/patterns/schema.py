"""The published JSON Schema of Parallax's YAML patterns (`parallax schema` prints it).

Point an editor at it with a first line `# yaml-language-server: $schema=parallax-pattern.json`
after `parallax schema > parallax-pattern.json`.
"""

from __future__ import annotations

from typing import Any

from parallax.agents.cli import PRESET_NAMES

FIELD_PATH = r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*|\[\*\])*$"
# A name that becomes a step id, or the start of the ids a run generates from it (`writer.r2`,
# `summarize.3`, `team.alice.4`): no `.`, which separates those suffixes (so a name can never
# collide with a generated id), and short enough to leave room for them within a step id.
NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,47}$"
_NAME: dict[str, Any] = {
    "pattern": NAME,
    "description": "a name: letters, digits, _ and -, at most 48; no '.', which the step ids a run "
    "generates use (writer.r2)",
}
# A reference to a step (`after:`) or a role: a name, or a step id the pattern itself makes (`writer.r1`).
REF = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
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
        "kind": {
            "enum": ["llm", "coder", "python", "command", "cli", "breakout"],
            "default": "llm",
            "description": "breakout: run another pattern (`pattern:`) as a sub-run on its own streams",
        },
        "role": {"type": "string", "pattern": REF, "description": "take defaults from `roles.<name>`"},
        "select": {
            "type": "object",
            "additionalProperties": False,
            "required": ["capabilities"],
            "description": "registered agents with these capabilities, chosen when the run is created",
            "properties": {
                "capabilities": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "min": {"type": "integer", "minimum": 1},
                "max": {"type": "integer", "minimum": 1},
            },
        },
        "pattern": {"type": "string", "description": "breakout: the pattern file to run, relative to this one"},
        "inputs": {"type": "object", "description": "breakout: inputs for the sub-run ({{...}} templates allowed)"},
        "prompt": {"type": "string", "description": "A template: {{input.x}}, {{steps.<id>.output}}"},
        "output": {"type": "string", "description": "An inline type name from `types`, or module:Class"},
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "llm/coder: provider:model (anthropic:..., openai:..., scripted:file.json); "
            "cli: the tool's own model name (sonnet, gpt-5-codex, ...), passed to its model flag",
        },
        "base_url": {"type": "string", "format": "uri"},
        "instructions": {"type": "string"},
        "ref": {"type": "string", "pattern": r"^.+:[A-Za-z_][\w.]*$"},
        "command": {
            "oneOf": [
                {"type": "string", "minLength": 1, "description": "A shell command; filled values are quoted once."},
                {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "description": "An argv run without a shell; each word is filled once.",
                },
            ]
        },
        "preset": {"enum": PRESET_NAMES},  # the built-in presets and those parallax.toml adds
        "env": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
        "settings": {"type": "object"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "retry": _retry,
        "verify": {"type": "string"},
        "after": {"type": "array", "items": {"type": "string", "pattern": REF}},
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

_role: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Defaults for the agents that name this role; in an orgchart, a position.",
    "properties": {
        **{
            k: _agent["properties"][k]
            for k in (
                "kind",
                "ref",
                "command",
                "model",
                "base_url",
                "instructions",
                "preset",
                "env",
                "settings",
                "timeout_s",
                "retry",
                "confidence",
                "output",
            )
        },
        "reports_to": {"type": "string", "pattern": REF},
        "instances": {
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 64},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["max"],
                    "properties": {
                        "min": {"type": "integer", "minimum": 1},
                        "max": {"type": "integer", "minimum": 1, "maximum": 64},
                    },
                },
            ],
        },
    },
}

_approval: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["after"],
    "properties": {
        "after": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": REF}},
        "prompt": {"type": "string"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "on_timeout": {"enum": ["reject", "approve"]},
    },
}

_stage: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "description": "One org-chart step: assign, parallel, review, approve or aggregate.",
    "properties": {
        "assign": {
            "type": "object",
            "additionalProperties": False,
            "required": ["from", "to"],
            "properties": {
                "from": {"type": "string"},
                "to": {"type": "string"},
                "prompt": {"type": "string"},
                "work": {"type": "string"},
            },
        },
        "parallel": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role"],
            "properties": {"role": {"type": "string"}, "prompt": {"type": "string"}},
        },
        "review": {
            "type": "object",
            "additionalProperties": False,
            "required": ["by"],
            "properties": {"by": {"type": "string"}, "prompt": {"type": "string"}},
        },
        "approve": {
            "type": "object",
            "additionalProperties": False,
            "required": ["by"],
            "properties": {"by": {"type": "string"}, "prompt": {"type": "string"}},
        },
        "aggregate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["by"],
            "properties": {"by": {"type": "string"}, "prompt": {"type": "string"}, "output": {"type": "string"}},
        },
    },
    "additionalProperties": False,
}

_threshold: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}

_globs: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}

_task: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["writes", "agent"],
    "description": "A coding task: runs in its own git worktree; may change only what `writes` covers.",
    "properties": {
        "prompt": {"type": "string"},
        "after": {"type": "array", "items": {"type": "string", "pattern": REF}},
        "writes": {**_globs, "minItems": 1},
        "reads": _globs,
        "contracts": _globs,
        "peers": {"type": "array", "items": {"type": "string", "pattern": REF}},
        "verify": {"type": "string"},
        "agent": _agent,
        "network": {"type": "boolean"},
        "sandbox": {"type": "boolean"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
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
        "after": {"type": "array", "items": {"type": "string", "pattern": REF}},
        "min_contributions": {
            "type": "integer",
            "minimum": 1,
            "description": "inputs that must contribute (default: all; fewer fails the merge)",
        },
    },
}

PATTERN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://parallax.dev/schema/pattern.json",
    "title": "Parallax pattern",
    "type": "object",
    "additionalProperties": False,
    "required": ["pattern", "name"],
    "properties": {
        "pattern": {"enum": ["fanout", "pipeline", "vote", "review", "consensus", "cascade", "mapreduce", "cohorts",
                             "orgchart", "tasks"],
                    "description": "fanout: all agents at once, then a merge; "
                    "pipeline: agents in order, each after the one before (or as `after` says); "
                    "vote: all agents at once, then a vote over one field; "
                    "review: an author, read-only reviewers, revisions until approved; "
                    "consensus: vote rounds until agreement; cascade: cheapest agent first, escalating; "
                    "mapreduce: one agent per item, then a reduce; cohorts: isolated cohorts and a moderator; "
                    "orgchart: roles reporting to each other, a workflow, escalation up the chain"},
        "roles": {"type": "object", "propertyNames": _NAME, "additionalProperties": _role},
        "tasks": {"type": "object", "minProperties": 1,
                  "propertyNames": {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"},
                  "additionalProperties": _task},
        "workers": {"type": "integer", "minimum": 1, "maximum": 256},
        "lease_s": {"type": "number", "exclusiveMinimum": 0},
        "review_queue": {"type": "boolean", "description": "tasks: finished work waits for `parallax review`"},
        "verify": {"type": "string", "description": "tasks: run on the integration branch after merging"},
        "resolver": {"type": "object", "additionalProperties": False, "required": ["agent"],
                     "description": "tasks: resolves a git conflict met while merging a task into the integration "
                     "branch (a verified resolution on its own branch, reviewed like a task)",
                     "properties": {"agent": _agent}},
        "approvals": {"type": "object", "propertyNames": _NAME, "additionalProperties": _approval,
                      "description": "approval gates: the run waits for `parallax approve RUN NAME`"},
        "review": {"type": "object", "additionalProperties": False,
                   "properties": {"author": {"type": "string"}, "approve_at": _threshold,
                                  "max_rounds": {"type": "integer", "minimum": 1, "maximum": 20}}},
        "consensus": {"type": "object", "additionalProperties": False, "required": ["field"],
                      "properties": {"field": {"type": "string", "pattern": FIELD_PATH}, "threshold": _threshold,
                                     "max_rounds": {"type": "integer", "minimum": 1, "maximum": 20},
                                     "weighted": {"type": "boolean"}}},
        "cascade": {"type": "object", "additionalProperties": False, "required": ["threshold"],
                    "properties": {"threshold": _threshold}},
        "map": {"type": "object", "additionalProperties": False, "required": ["over", "agent"],
                "properties": {"over": {"type": "string", "pattern": r"^(input|steps)\.[\w.\-]+$"},
                               "agent": {"type": "string"}, "reduce": {"type": "string"},
                               "max_items": {"type": "integer", "minimum": 1}}},
        "cohorts": {
            "type": "object", "minProperties": 1, "propertyNames": _NAME,
            "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["agents"],
                "properties": {"brief": {"type": "string"}, "agents": {
                    "type": "object", "minProperties": 1, "propertyNames": _NAME,
                    "additionalProperties": _agent}},
            },
        },
        "moderator": {
            "type": "object", "additionalProperties": False, "required": ["phases"],
            "properties": {
                **{k: _agent["properties"][k] for k in ("kind", "model", "base_url", "instructions", "prompt",
                                                          "timeout_s", "role", "ref", "command", "preset", "env",
                                                          "settings")},
                "phases": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": {"type": "string", "pattern": REF}, "prompt": {"type": "string"}}}},
                "rounds_per_phase": {"type": "integer", "minimum": 1, "maximum": 100},
                "max_rounds": {"type": "integer", "minimum": 1, "maximum": 1000},
                "cadence": {"type": "integer", "minimum": 1},
                "max_messages": {"type": "integer", "minimum": 1},
                "turn_timeout_s": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "synthesis": {"type": "object", "additionalProperties": False,
                      "properties": {"prompt": {"type": "string"}, "output": {"type": "string"},
                                     "model": _agent["properties"]["model"], "instructions": {"type": "string"}}},
        "workflow": {"type": "array", "minItems": 1, "items": _stage},
        "escalation": {"type": "object", "additionalProperties": False,
                       "properties": {"below": _threshold,
                                      "max_depth": {"type": "integer", "minimum": 0, "maximum": 10},
                                      "user_timeout_s": {"type": "number", "exclusiveMinimum": 0}}},
        "vote": {
            "type": "object",
            "additionalProperties": False,
            "required": ["field"],
            "properties": {
                "field": {"type": "string", "pattern": FIELD_PATH},
                "weighted": {"type": "boolean", "description": "weigh each vote by its confidence"},
                "min_contributions": {"type": "integer", "minimum": 1,
                                      "description": "votes needed (default: every agent's; fewer fails the vote)"},
            },
        },
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "model": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+:.+$|^test$"},
        "inputs": {"type": "object"},
        "env_expand": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "description": "environment variables `${NAME}` may fill in (never secrets: grant those with `env:`)",
        },
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
            "propertyNames": _NAME,
            "additionalProperties": _agent,
        },
        "merge": _merge,
    },
}  # fmt: skip
