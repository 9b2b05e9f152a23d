"""`command` agents: any shell command. Standard input is the agent's input as JSON; standard
output is its contribution (parsed as JSON when it is JSON, else kept as text). Each stdout
line is streamed to the agent's stream as it appears; stderr lines are logged there too.

`{{ ... }}` references in the command are filled from the input, shell-quoted.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.agents.process import failed, run_process
from parallax.core import events as ev
from parallax.core.template import lookup, references


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
    out = command
    for ref in references(command):
        value = lookup(context, ref)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out = out.replace("{{" + ref + "}}", shlex.quote(text)).replace("{{ " + ref + " }}", shlex.quote(text))
    return out


class CommandAgent(Agent):
    async def run(self, ctx: AgentContext) -> AgentResult:
        assert self.spec.command is not None
        command = render_command(self.spec.command, {"input": ctx.input, "prompt": ctx.prompt or ""})
        ctx.log(ev.AGENT_INPUT, {"command": command, "stdin": ctx.input})
        result = await run_process(
            ctx.command(["/bin/sh", "-c", command]),
            stdin=ctx.input_json().encode(),
            env=ctx.env,
            cwd=ctx.workdir,
            timeout_s=ctx.time_left(),
            on_stdout_line=ctx.emit,
            on_stderr_line=lambda line: ctx.log(ev.AGENT_LOG, {"stderr": line}),
        )
        if result.returncode != 0:
            raise failed("command", result)
        return AgentResult(parse_output(result.stdout))
