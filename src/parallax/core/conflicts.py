"""Conflicts: every disagreement a merge finds, kept as data and never averaged away.

Kinds:
- disagreement: the same field filled differently by two or more contributions;
- rule: a declared cross-check failed (or could not be checked because a section is missing);
- gap: an input that should have contributed did not (it failed, timed out or was skipped);
- schema: the assembled document does not fit the merge's target model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ConflictKind = Literal["disagreement", "rule", "gap", "schema"]


class Conflict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ConflictKind
    path: str  # the field, rule or section the conflict is about
    message: str
    agents: tuple[str, ...] = ()
    values: dict[str, Any] = Field(default_factory=dict)  # agent -> what it said
    rule: str | None = None
    step: str | None = None  # the merge step that found it

    def describe(self) -> str:
        who = f" [{', '.join(self.agents)}]" if self.agents else ""
        return f"{self.kind} at {self.path}{who}: {self.message}"
