"""What runs in an agent step: `AgentSpec`, frozen and validated on construction (each kind has
the fields it needs). Shared by the Plan IR (`core/plan.py`, agent steps) and the task graph
(`core/tasks.py`, each task's agent), and re-exported by `core/plan.py`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

AgentKind = Literal["llm", "coder", "python", "command", "cli"]


class AgentSpec(BaseModel):
    """What runs in an agent step. Which fields apply depends on `kind`:

    - llm: `model` (a pydantic-ai model string such as `anthropic:claude-sonnet-4-5`,
      `openai:gpt-5`, or `openai-compatible:<model>` with `base_url`), `instructions`.
    - python: `ref`, an importable `module:attr` or `path/to/file.py:attr` async callable.
    - command: `command`, a shell command, or an argv list run without a shell (stdin: the
      input as JSON; stdout: the output).
    - cli: `preset` (claude, codex, gemini, aider, opencode) or `command` as a template.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AgentKind
    model: str | None = None
    base_url: str | None = None
    instructions: str | None = None
    ref: str | None = None
    command: str | tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    preset: str | None = None
    env: tuple[str, ...] = ()  # names of parent environment variables granted to the agent
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    cache: bool | None = None  # None: the kind's default (on for llm, cli, command; off for python)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> AgentSpec:
        required = {"llm": "model", "coder": "model", "python": "ref", "command": "command"}
        field = required.get(self.kind)
        if field is not None and not getattr(self, field):
            raise ValueError(f"a {self.kind} agent needs `{field}`")
        if isinstance(self.command, tuple) and not self.command:
            raise ValueError("`command` as a list needs at least the program")
        if self.kind == "cli" and not (self.preset or self.command):
            raise ValueError("a cli agent needs `preset` or `command`")
        return self

    @property
    def provider(self) -> str:
        """The circuit-breaker and rate-limit key: the model's provider, or the agent kind."""
        if self.kind in ("llm", "coder") and self.model:
            return self.model.split(":", 1)[0] if ":" in self.model else "llm"
        if self.kind == "cli":
            return f"cli:{self.preset or 'template'}"
        return self.kind

    @property
    def cached_by_default(self) -> bool:
        return self.kind != "python"
