"""How a run is executed, as every entry point hands it to the runner (and the runner to its
step kinds and sub-runs)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from parallax.core.events import Event
from parallax.engine.attempt import Executor
from parallax.engine.heartbeat import BEAT_S
from parallax.model_choice import ModelChoice
from parallax.settings import HooksConfig


@dataclass
class RunOptions:
    concurrency: int | None = None  # overrides the plan's cap
    use_cache: bool = True
    workdir: Path | None = None
    parent_env: Mapping[str, str] | None = None  # where granted variables come from (default: os.environ)
    on_event: Callable[[Event], None] | None = None  # sees each control event once it is durable
    executor: Executor | None = None  # runs agent attempts elsewhere (distributed mode); None: here
    hooks: HooksConfig | None = None  # commands run on events (parallax.toml [hooks])
    coordinator: str = field(default_factory=lambda: f"coord-{secrets.token_hex(6)}")
    # `--model` on resume/fork: the model for llm/coder steps not yet started (flag), or for
    # those of one role (by_role); the plan's model otherwise. Recorded in each step.started.
    models: ModelChoice | None = None
    heartbeat_s: float = BEAT_S  # how often the coordinator says it is alive (engine/heartbeat.py)
