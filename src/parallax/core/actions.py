"""The typed vocabulary of moderated and reviewed runs: what a moderator may decide, what a
cohort member contributes, what a reviewer returns. Agents are asked for these models (their
output is validated against them), and people send the same actions with `parallax topology`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Name = Annotated[str, Field(pattern=_NAME)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Continue(_Action):
    """Another round as things stand."""

    action: Literal["continue"] = "continue"


class Steer(_Action):
    """Say something to one cohort (or `all`): it appears in their next round's prompt."""

    action: Literal["steer"] = "steer"
    to: Name
    text: str


class Breakout(_Action):
    """Open a new stream (a breakout room): its own agents, a prompt, and exactly the streams
    it may read (cohort names; none by default)."""

    action: Literal["breakout"] = "breakout"
    name: Name
    prompt: str
    agents: list[Name] = Field(min_length=1)
    reads: list[Name] = Field(default_factory=list)


class Fork(_Action):
    """Copy a cohort's stream up to `at` (default: all of it) into a new cohort with the same
    members; both go on independently."""

    action: Literal["fork"] = "fork"
    stream: Name
    into: Name
    at: Annotated[int, Field(ge=0)] | None = None


class Merge(_Action):
    """Fold several cohorts into one new cohort (their transcripts interleaved by time); where
    their latest positions differ, a conflict is recorded. The sources stop."""

    action: Literal["merge"] = "merge"
    streams: list[Name] = Field(min_length=2)
    into: Name


class Rewire(_Action):
    """Change which other cohorts' streams a cohort may read (empty: isolated again)."""

    action: Literal["rewire"] = "rewire"
    cohort: Name
    reads: list[Name] = Field(default_factory=list)


class StartPhase(_Action):
    """Move to the next phase (or the named one)."""

    action: Literal["start_phase"] = "start_phase"
    phase: Name | None = None


class Stop(_Action):
    """A cohort takes no more turns."""

    action: Literal["stop"] = "stop"
    stream: Name


class WrapUp(_Action):
    """One last round, then conclude."""

    action: Literal["wrap_up"] = "wrap_up"


class Conclude(_Action):
    """Write the synthesis now."""

    action: Literal["conclude"] = "conclude"


Action = Annotated[
    Continue | Steer | Breakout | Fork | Merge | Rewire | StartPhase | Stop | WrapUp | Conclude,
    Field(discriminator="action"),
]


def _continue() -> list[Action]:
    return [Continue()]


class ModeratorDecision(BaseModel):
    """What the moderator returns after reading every cohort."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str = ""
    actions: list[Action] = Field(default_factory=_continue)


class Contribution(BaseModel):
    """A cohort member's turn: where they stand now and why."""

    position: str
    reasoning: str = ""
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    stance: str | None = Field(
        default=None,
        description=(
            "Your answer in one to three words, so positions can be compared exactly: "
            "yes / no / depends for a yes-or-no question, otherwise the option you choose."
        ),
    )


class Synthesis(BaseModel):
    """The moderator's conclusion over every cohort."""

    summary: str
    agreements: list[str] = Field(default_factory=list)
    disagreements: list[str] = Field(default_factory=list)
    recommendation: str = ""
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


class Verdict(BaseModel):
    """A reviewer's (or a manager's) judgement of someone else's work."""

    approve: bool
    confidence: Annotated[float, Field(ge=0, le=1)] = 1.0
    comments: list[str] = Field(default_factory=list)


class Assignments(BaseModel):
    """A manager splitting work for their reports: one entry per task."""

    tasks: list[str] = Field(min_length=1)


ACTION_MODELS: dict[str, type[_Action]] = {
    m.model_fields["action"].default: m
    for m in (Continue, Steer, Breakout, Fork, Merge, Rewire, StartPhase, Stop, WrapUp, Conclude)
}


def ref(model: type[BaseModel]) -> str:
    return f"{__name__}:{model.__name__}"
