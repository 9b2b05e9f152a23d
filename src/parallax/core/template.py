"""Prompt templates: `{{ input.brief }}`, `{{ steps.backend.output }}`, `{{ steps.backend.output.endpoints }}`.

Pure and strict: a reference to something that does not exist is an error naming it, never
an empty string. Non-string values are rendered as indented JSON. A template is filled in one
pass: a filled value is never scanned for references again, so model output holding `{{ ... }}`
stays text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from parallax.core.errors import TemplateError

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")


def lookup(context: Mapping[str, Any], dotted: str) -> Any:
    value: Any = context
    walked: list[str] = []
    for part in dotted.split("."):
        walked.append(part)
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"template refers to {dotted!r}, but {'.'.join(walked)!r} does not exist")
    return value


def references(template: str) -> list[str]:
    return [m.group(1) for m in REFERENCE.finditer(template)]


def render(template: str, context: Mapping[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)

    return REFERENCE.sub(replace, template)
