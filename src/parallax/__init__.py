"""Parallax: run AI agents in parallel, coordinated through durable append-only streams."""

__version__ = "0.1.0"
