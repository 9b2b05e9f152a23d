"""Things that think: llm, coder, python, command and cli agents behind one `Agent` boundary."""

from __future__ import annotations

from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.core.plan import AgentSpec


def build_agent(spec: AgentSpec) -> Agent:
    """The agent for a spec; each kind's module (and its dependencies) is imported only when used."""
    if spec.kind == "python":
        from parallax.agents.python import PythonAgent

        return PythonAgent(spec)
    if spec.kind == "command":
        from parallax.agents.command import CommandAgent

        return CommandAgent(spec)
    if spec.kind == "cli":
        from parallax.agents.cli import CliAgent

        return CliAgent(spec)
    if spec.kind == "coder":
        from parallax.agents.coder import CoderAgent

        return CoderAgent(spec)
    from parallax.agents.llm import LlmAgent

    return LlmAgent(spec)


__all__ = ["Agent", "AgentContext", "AgentResult", "build_agent"]
