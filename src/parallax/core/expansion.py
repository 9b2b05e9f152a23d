"""What every controller shares (see `core/expand.py` and `core/moderation.py`): the `Expansion`
a control step decides, the way a controller instantiates one of its step templates, and the
pure reads of a run's state it decides from. Nothing here has side effects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parallax.core.conflicts import Conflict
from parallax.core.plan import Step
from parallax.core.state import RunState


@dataclass
class Expansion:
    output: Any = None
    confidence: float | None = None
    add: list[Step] = field(default_factory=list[Step])
    rewire: dict[str, list[str]] = field(default_factory=dict[str, list[str]])
    session: dict[str, Any] | None = None
    applied: dict[int, str] = field(default_factory=dict[int, str])  # topology request seq -> outcome
    conflicts: list[Conflict] = field(default_factory=list[Conflict])
    forks: list[tuple[str, str, int | None]] = field(default_factory=list[tuple[str, str, int | None]])
    merges: list[tuple[list[str], str]] = field(default_factory=list[tuple[list[str], str]])
    divergence: dict[str, Any] | None = None
    error: str | None = None


def make_step(template: Mapping[str, Any], step_id: str, after: tuple[str, ...], **updates: Any) -> Step:
    data = dict(template)
    data.update(updates)
    data["id"] = step_id
    data["after"] = list(after)
    data.setdefault("role", template.get("role") or template.get("id"))
    return Step.model_validate(data)


def output_of(state: RunState, step_id: str) -> Any:
    """The step's recorded output (None for a step the state does not know)."""
    return state.steps[step_id].output if step_id in state.steps else None


def succeeded(state: RunState, step_id: str) -> bool:
    return step_id in state.steps and state.steps[step_id].status == "succeeded"


def text_of(output: Any) -> str:
    """A contribution as prose, for transcripts and the divergence measure."""
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("position", "summary", "text", "answer"):
            if isinstance(output.get(key), str):
                extra = output.get("reasoning") if key == "position" else output.get("recommendation")
                return str(output[key]) + (f" ({extra})" if isinstance(extra, str) and extra else "")
    return json.dumps(output, sort_keys=True, ensure_ascii=False, default=str)
