"""`coder`: an LLM with tools confined to its worktree, looping reason, write, test, iterate.

Tools (every path is relative to the worktree; anything that resolves outside it, through `..`
or a symlink, is refused):
    list_files(directory)       files under a directory (not .git)
    read_file(path)             a text file (at most 200 KB)
    search(pattern, glob)       lines matching a regular expression
    write_file(path, content)   refused for paths outside the task's write set
    run_verify()                the task's verify command (in the sandbox when the task has one)

After each model run the verify command runs; while it fails and `settings.max_iterations`
(default 4) allows, the model is told what failed and goes on from the same conversation.
The run's budget and the request limit (`settings.request_limit`, default 50) bound it too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from parallax.agents.base import AgentContext, AgentResult
from parallax.agents.llm import LlmAgent
from parallax.agents.process import run_process, tail_text
from parallax.core import events as ev
from parallax.core.errors import AgentFailed
from parallax.core.tasks import in_write_set

MAX_READ = 200_000
MAX_MATCHES = 200


class Worktree:
    """The coder's view of its worktree: what the tools may touch."""

    def __init__(self, root: Path, writes: list[str]) -> None:
        self.root = root.resolve()
        self.writes = writes

    def resolve(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if path != self.root and not path.is_relative_to(self.root):
            raise PermissionError(f"{relative!r} is outside the worktree")
        if ".git" in path.relative_to(self.root).parts:
            raise PermissionError(f"{relative!r} is inside .git")
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


class CoderAgent(LlmAgent):
    def tools(self, ctx: AgentContext) -> list[Any]:
        task = ctx.input.get("task", {})
        tree = Worktree(ctx.workdir or Path.cwd(), list(task.get("writes", [])))
        verify = task.get("verify")

        def list_files(directory: str = ".") -> str:
            """List the files under a directory of the worktree (relative paths)."""
            try:
                base = tree.resolve(directory)
            except PermissionError as e:
                return f"refused: {e}"
            names = [
                tree.relative(p)
                for p in sorted(base.rglob("*"))
                if p.is_file() and ".git" not in p.relative_to(tree.root).parts
            ]
            return "\n".join(names[:2000]) or "(no files)"

        def read_file(path: str) -> str:
            """Read a text file of the worktree."""
            try:
                target = tree.resolve(path)
            except PermissionError as e:
                return f"refused: {e}"
            if not target.is_file():
                return f"no such file: {path}"
            return target.read_text(errors="replace")[:MAX_READ]

        def search(pattern: str, glob: str = "**/*") -> str:
            """Lines matching a regular expression, as path:line: text."""
            try:
                regex = re.compile(pattern)
            except re.error as e:
                return f"bad pattern: {e}"
            out: list[str] = []
            for path in sorted(tree.root.glob(glob)):
                if not path.is_file() or ".git" in path.relative_to(tree.root).parts:
                    continue
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
                    if regex.search(line):
                        out.append(f"{tree.relative(path)}:{number}: {line}")
                        if len(out) >= MAX_MATCHES:
                            return "\n".join(out)
            return "\n".join(out) or "(no matches)"

        def write_file(path: str, content: str) -> str:
            """Write a file of the worktree (only paths in the task's write set)."""
            try:
                target = tree.resolve(path)
            except PermissionError as e:
                return f"refused: {e}"
            relative = tree.relative(target)
            if not in_write_set(relative, tree.writes):
                return f"refused: {relative} is outside this task's write set {tree.writes}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            return f"wrote {relative} ({len(content)} characters)"

        async def run_verify() -> str:
            """Run the task's verify command (its tests) and see the result."""
            if not verify:
                return "this task has no verify command"
            code, output = await _verify(ctx, verify)
            return f"exit {code}\n{output}"

        return [list_files, read_file, search, write_file, run_verify]

    async def run(self, ctx: AgentContext) -> AgentResult:
        verify = ctx.input.get("task", {}).get("verify")
        iterations = int(self.spec.settings.get("max_iterations", 4) or 4)  # type: ignore[arg-type]
        prompt = ctx.prompt or "Do the task."
        history: list[Any] | None = None
        usage: dict[str, Any] = {}
        for iteration in range(1, iterations + 1):
            result, history = await self.run_turn(ctx, prompt, history)
            usage = _add(usage, result.usage)
            if not verify:
                return AgentResult(result.output, result.confidence, usage)
            code, output = await _verify(ctx, verify)
            ctx.log(ev.AGENT_LOG, {"iteration": iteration, "verify_exit": code, "verify_output": output})
            if code == 0:
                return AgentResult(result.output, result.confidence, usage)
            prompt = (
                f"The verify command `{verify}` failed (exit {code}):\n{output}\nFix it, then say what you changed."
            )
        error = AgentFailed(f"verify still failing after {iterations} iteration(s)", retryable=False)
        error.usage = usage
        raise error


async def _verify(ctx: AgentContext, command: str) -> tuple[int, str]:
    result = await run_process(
        ctx.command(["/bin/sh", "-c", command]),
        stdin=None,
        env=ctx.env,
        cwd=ctx.workdir,
        timeout_s=ctx.time_left() or 600.0,
    )
    return result.returncode, tail_text((result.stdout + result.stderr).strip())


def _add(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for key, value in more.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = out.get(key, 0) + value
        else:
            out[key] = value if key not in out else out[key] and value
    return out
