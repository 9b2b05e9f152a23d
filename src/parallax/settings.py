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


@dataclass(frozen=True)
class Settings:
    store_url: str | None = None  # PARALLAX_STORE
    model: str | None = None  # PARALLAX_MODEL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(store_url=env.get("PARALLAX_STORE") or None, model=env.get("PARALLAX_MODEL") or None)

    def default_store_url(self, cwd: Path | None = None) -> str:
        """PARALLAX_STORE if set, else `.parallax/parallax.db` under the project root."""
        if self.store_url:
            return self.store_url
        return f"sqlite://{find_project_root(cwd) / DEFAULT_STORE_RELATIVE}"
