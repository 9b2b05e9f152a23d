"""Where each value of a pattern document came from, and errors placed there.

`Located` maps a value's path in the document (`("agents", "writer", "model")`) to the line and
column it was written at; a path it has no mark for is placed at its nearest marked ancestor,
and the document's top at 1:1. Every error it makes reads `file:line:col: field.path: what`.
Shared by the YAML reader (`patterns/yaml_loader.py`) and the compilers (`patterns/compile.py`).
"""

from __future__ import annotations

from parallax.core.errors import PlanError

Path_ = tuple[str | int, ...]


class Located:
    """Where each value of a YAML document came from."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: dict[Path_, tuple[int, int]] = {}

    def position(self, path: Path_) -> tuple[int, int]:
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def at(self, path: Path_) -> str:
        line, col = self.position(path)
        return f"{self.file}:{line}:{col}"

    def error(self, path: Path_, message: str) -> PlanError:
        return PlanError(f"{self.at(path)}: {shown(path)}: {message}")


def shown(path: Path_) -> str:
    """A path as written in errors: `agents.writer.model`, shortened in the middle when deep."""
    if len(path) > 8:  # a refused deep path: its start and its end say where
        return ".".join(str(p) for p in (*path[:4], f"...({len(path) - 6} more)", *path[-2:]))
    return ".".join(str(p) for p in path) or "(top level)"
