"""A model chosen once: which model each llm/coder agent gets, and why.

An agent that names its model (itself, or through its role) keeps it. Otherwise, first wins:

1. `--model ROLE=MODEL` for that agent (by its role, its name or its step id; this one also
   replaces a model the agent names, since it is asked for that agent alone);
2. `--model MODEL` (once per command: run, research, resume, fork);
3. the pattern's top-level `model:`;
4. `PARALLAX_MODEL`, then `model` in a parallax.toml (`Settings.default_model`);
5. a provider's default model when its key is set (ANTHROPIC_API_KEY, OPENAI_API_KEY, GOOGLE_API_KEY).

Nothing found is a located error that says all of this. `parallax config show TARGET` prints the
choice for every agent of a plan, with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from parallax.core.errors import UserError

_ROLE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

NO_MODEL = (
    "give --model MODEL, set PARALLAX_MODEL or `model` in parallax.toml, set a provider key "
    "(ANTHROPIC_API_KEY, OPENAI_API_KEY, GOOGLE_API_KEY), or name one here"
)


@dataclass(frozen=True)
class ModelChoice:
    flag: str | None = None  # --model MODEL
    by_role: Mapping[str, str] = field(default_factory=dict)  # --model ROLE=MODEL
    configured: str | None = None  # PARALLAX_MODEL, parallax.toml, or a provider's default
    configured_why: str = ""

    def choose(self, names: Iterable[str], own: str | None, pattern: str | None) -> tuple[str | None, str]:
        """The model for an agent known by `names` (role, name, step id) that names `own` (or
        None), in a pattern whose top-level model is `pattern`; and why."""
        for name in names:
            if name in self.by_role:
                return self.by_role[name], f"--model {name}=…"
        if own:
            return own, "named by the agent (or its role)"
        if self.flag:
            return self.flag, "--model"
        if pattern:
            return pattern, "the pattern's `model:`"
        if self.configured:
            return self.configured, self.configured_why
        return None, NO_MODEL

    def unmatched(self, seen: Iterable[str]) -> list[str]:
        """The roles of `--model ROLE=MODEL` that no agent answered to."""
        known = set(seen)
        return sorted(role for role in self.by_role if role not in known)


def parse_model_flags(values: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """`--model MODEL` (at most once) and `--model ROLE=MODEL` (any number)."""
    flag: str | None = None
    by_role: dict[str, str] = {}
    for value in values:
        role, sep, model = value.partition("=")
        if sep and _ROLE.match(role) and ":" not in role:
            if not model.strip():
                raise UserError(f"--model {value}: no model after {role}=")
            by_role[role] = model.strip()
            continue
        if not value.strip():
            raise UserError("--model: an empty model name")
        if flag is not None and flag != value.strip():
            raise UserError(f"--model given twice ({flag}, {value.strip()}); scope one to a role: ROLE=MODEL")
        flag = value.strip()
    return flag, by_role


def model_choice(values: Sequence[str], configured: tuple[str | None, str]) -> ModelChoice:
    """The choice from the command's --model values and the configured default
    (`Settings.default_model()`)."""
    flag, by_role = parse_model_flags(values)
    model, why = configured
    return ModelChoice(flag, by_role, model, why if model else "")
