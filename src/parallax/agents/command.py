"""`command` agents: any shell command. Standard input is the agent's input as JSON; standard
output is its contribution (parsed as JSON when it is JSON, else kept as text). Each stdout
line is streamed to the agent's stream as it appears; stderr lines are logged there too.

`{{ ... }}` references in the command are filled from the input in one pass: in a shell
string each value is quoted exactly once; a list (`command: [prog, arg, ...]`) runs without a
shell, each word filled once.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.agents.process import failed, run_process
from parallax.core import events as ev
from parallax.core.errors import AgentFailed
from parallax.core.template import REFERENCE, lookup


def parse_output(stdout: str) -> Any:
    text = stdout.strip()
    if not text:
        return ""
    try:
        return json.loads(text)
    except ValueError:
        pass
    last = text.splitlines()[-1].strip()
    if last.startswith(("{", "[")):
        try:
            return json.loads(last)
        except ValueError:
            pass
    return text


def render_command(command: str, context: dict[str, Any]) -> str:
    """Fill `{{ ... }}` references into a shell command in one pass, each value quoted exactly
    once. Values are never scanned again: a value holding `{{ prompt }}`, `$(...)`, backticks,
    quotes or newlines stays one literal word. A value holding NUL cannot be passed to a process
    at all and is refused."""

    def replace(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\0" in text:
            raise AgentFailed(
                f"{{{{ {match.group(1)} }}}} holds a NUL byte, which no command can receive", retryable=False
            )
        return shlex.quote(text)

    return REFERENCE.sub(replace, command)


def render_argv(argv: Sequence[str], context: dict[str, Any]) -> list[str]:
    """Fill references into each word of an argv (no shell): each word is filled once, and a
    value becomes part of its word, never new words or options of its own."""

    def fill(word: str) -> str:
        def replace(match: re.Match[str]) -> str:
            value = lookup(context, match.group(1))
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

        out = REFERENCE.sub(replace, word)
        if "\0" in out:
            raise AgentFailed(
                f"argument {word!r} holds a NUL byte once filled, which no command can receive", retryable=False
            )
        return out

    return [fill(word) for word in argv]


def template_context(ctx: AgentContext) -> dict[str, Any]:
    """What a command template may name: `{{ prompt }}`, `{{ input.x }}` (the run's inputs) and
    the rest of the agent's input (`{{ upstream.step }}`, `{{ task.id }}`)."""
    given = ctx.input if isinstance(ctx.input, dict) else {"input": ctx.input}
    return {**given, "prompt": ctx.prompt or ""}


def command_argv(command: str | Sequence[str], context: dict[str, Any]) -> list[str]:
    """The argv for a `command`: a string runs through `/bin/sh -c` with every value quoted
    once; a list is an argv run without a shell, each word filled once."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", render_command(command, context)]
    return render_argv(command, context)


class CommandAgent(Agent):
    async def run(self, ctx: AgentContext) -> AgentResult:
        assert self.spec.command is not None
        argv = command_argv(self.spec.command, template_context(ctx))
        ctx.log(
            ev.AGENT_INPUT, {"command": argv[-1] if isinstance(self.spec.command, str) else argv, "stdin": ctx.input}
        )
        result = await run_process(
            ctx.command(argv),
            stdin=ctx.input_json().encode(),
            env=ctx.env,
            cwd=ctx.workdir,
            timeout_s=ctx.time_left(),
            on_stdout_line=ctx.emit,
            on_stderr_line=lambda line: ctx.log(ev.AGENT_LOG, {"stderr": line}),
        )
        if result.truncated:
            ctx.log(ev.AGENT_LOG, {"output_truncated": result.dropped})
        if result.returncode != 0:
            raise failed("command", result)
        return AgentResult(parse_output(result.stdout))
