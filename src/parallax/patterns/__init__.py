"""Patterns: orchestrations written in Python (and later YAML) that compile to the Plan IR."""

from parallax.patterns.builders import (
    cli,
    command,
    disjoint,
    every,
    fanout,
    llm,
    python,
)

__all__ = ["cli", "command", "disjoint", "every", "fanout", "llm", "python"]
