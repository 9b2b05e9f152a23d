"""The one place Parallax reads its environment.

Every variable is prefixed `PARALLAX_`; error messages name the variable they came from.
Later layers add their settings here rather than reading `os.environ` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_MARKERS = ("parallax.toml", ".parallax", ".git")
DEFAULT_STORE_RELATIVE = Path(".parallax") / "parallax.db"


def find_project_root(start: Path | None = None) -> Path:
    """The nearest ancestor of `start` (default: the working directory) holding a
    `parallax.toml`, a `.parallax/` folder or a `.git`; `start` itself when none does."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return here


# A provider key in the environment, and the model Parallax uses by default when it finds one.
PROVIDER_DEFAULTS = (
    ("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-5"),
    ("OPENAI_API_KEY", "openai:gpt-4.1-mini"),
    ("GOOGLE_API_KEY", "google-gla:gemini-2.5-flash"),
)


@dataclass(frozen=True)
class Settings:
    store_url: str | None = None  # PARALLAX_STORE
    model: str | None = None  # PARALLAX_MODEL
    provider_keys: tuple[str, ...] = ()  # names of the provider key variables that are set

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            store_url=env.get("PARALLAX_STORE") or None,
            model=env.get("PARALLAX_MODEL") or None,
            provider_keys=tuple(name for name, _ in PROVIDER_DEFAULTS if env.get(name)),
        )

    def default_model(self) -> tuple[str | None, str]:
        """The model to use when a plan leaves it open, and why: PARALLAX_MODEL, else the
        default model of the first provider whose key is set, else None (offline)."""
        if self.model:
            return self.model, "PARALLAX_MODEL"
        for name, model in PROVIDER_DEFAULTS:
            if name in self.provider_keys:
                return model, name
        return None, "no PARALLAX_MODEL and no provider key (ANTHROPIC_API_KEY, OPENAI_API_KEY, GOOGLE_API_KEY)"

    def default_store_url(self, cwd: Path | None = None) -> str:
        """PARALLAX_STORE if set, else `.parallax/parallax.db` under the project root."""
        if self.store_url:
            return self.store_url
        return f"sqlite://{find_project_root(cwd) / DEFAULT_STORE_RELATIVE}"
