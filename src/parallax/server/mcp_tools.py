"""Parallax over the Model Context Protocol: `parallax mcp` (stdio), built on the official `mcp`
SDK (`MCPServer`). A coding agent such as Claude Code adds it as an MCP server and gets tools
to start a pattern, fan a question out to several agents, watch a run, read a stream, post a
message or a topology change, and fetch a result.

Runs started here execute in this process (as with `parallax serve`), on the configured store,
so any other process sharing the store can watch or join them.

    claude mcp add parallax -- parallax mcp
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from parallax import __version__
from parallax.core.errors import ParallaxError, UserError
from parallax.core.state import RunState, describe
from parallax.engine import api, live
from parallax.engine.runner import Runner, RunOptions
from parallax.launch import load_plan, run_options
from parallax.settings import Settings
from parallax.streams.base import ReadLimit, SeqNum, StreamStore

INSTRUCTIONS = """Parallax runs AI agents in parallel and records everything on durable streams.
Start a YAML pattern with start_run (or fan one question out to several agents with
ask_agents), follow it with watch_run, and fetch the merged answer and its conflicts with
get_result. read_stream shows any stream (runs/<run>/control, runs/<run>/agents/<step>,
runs/<run>/cohorts/<name>); post_message and change_topology steer a live run with cohorts."""

DEFAULT_PERSPECTIVES = ("skeptic", "pragmatist", "expert")


class ParallaxTools:
    """The state behind the tools: the store, and the runs this process is executing."""

    def __init__(self, store: StreamStore, options: RunOptions | None = None, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.options = options or run_options(self.settings)
        self.running: dict[str, asyncio.Task[RunState]] = {}

    def _start(self, run_id: str) -> None:
        runner = Runner(self.store, run_id, self.options)
        self.running[run_id] = asyncio.create_task(runner.run(), name=f"mcp-run:{run_id}")

    async def start_run(
        self, target: str, inputs: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        plan = await asyncio.to_thread(lambda: load_plan(self.settings, target=target, inputs=inputs))  # off the loop
        new_id = await api.create_run(self.store, plan, run_id=run_id, source=target)
        self._start(new_id)
        return {"run_id": new_id, "plan": plan.name, "steps": [s.id for s in plan.steps]}

    async def ask_agents(
        self, question: str, model: str, perspectives: list[str] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        names = perspectives or list(DEFAULT_PERSPECTIVES)
        agents = {name: {"prompt": f"Answer as a {name}. Question: {{{{input.question}}}}"} for name in names}
        text = json.dumps({"pattern": "fanout", "name": "ask", "model": model, "agents": agents})
        plan = await asyncio.to_thread(
            lambda: load_plan(self.settings, pattern=text, inputs={"question": question}, source="<ask_agents>")
        )
        new_id = await api.create_run(self.store, plan, run_id=run_id, source="mcp:ask_agents")
        self._start(new_id)
        return {"run_id": new_id, "agents": names}

    async def watch_run(self, run_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        task = self.running.get(run_id)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if done and task.exception() is not None:
                raise UserError(f"run {run_id} stopped: {task.exception()}")
        state = await api.load_run(self.store, run_id)
        summary = describe(state)
        return {
            "run_id": run_id,
            "status": state.status,
            "finished": state.finished,
            "steps": {s["id"]: s["status"] for s in summary["steps"]},
            "conflicts": len(state.conflicts),
        }

    async def get_result(self, run_id: str) -> dict[str, Any]:
        state = await api.load_run(self.store, run_id)
        summary = describe(state)
        return {
            "run_id": run_id,
            "status": state.status,
            "result": summary.get("result"),
            "conflicts": summary.get("conflicts", []),
            "outputs": {s["id"]: s.get("output") for s in summary["steps"] if s["status"] == "succeeded"},
        }

    async def read_stream(self, stream: str, start: int = 0, limit: int = 100) -> dict[str, Any]:
        batch = await self.store.read(stream, SeqNum(start), ReadLimit(count=min(limit, 1000)), clamp=True)
        records = []
        for record in batch.records:
            body: Any = record.body.decode(errors="replace")
            with contextlib.suppress(ValueError):
                body = json.loads(body)
            headers = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in record.headers}
            records.append({"seq": record.seq_num, "timestamp": record.timestamp, "headers": headers, "body": body})
        return {"stream": stream, "records": records, "tail": batch.tail.seq_num}

    async def post_message(self, run_id: str, to: str, text: str) -> dict[str, Any]:
        seq = await live.send_message(self.store, run_id, to, text, by="mcp")
        return {"run_id": run_id, "to": to, "seq": seq}

    async def task_peers(self, run_id: str, task: str) -> dict[str, Any]:
        """The tasks running beside `task` in a task graph: prompts, write sets, files changed so far."""
        from parallax.engine.integration import task_graph_of
        from parallax.engine.peers import peers_of

        spec, board = await task_graph_of(self.store, run_id)
        if task not in {t.id for t in spec.tasks}:
            raise UserError(f"run {run_id} has no task {task!r}")
        return {"run_id": run_id, "you": task, "peers": peers_of(board, task)}

    async def change_topology(self, run_id: str, action: dict[str, Any], wait_s: float = 0.0) -> dict[str, Any]:
        seq = await live.request_topology(self.store, run_id, action, by="mcp")
        outcome = await live.wait_applied(self.store, run_id, seq, wait_s) if wait_s > 0 else None
        return {"run_id": run_id, "request_seq": seq, "outcome": outcome}

    async def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        runs = await api.list_runs(self.store, limit=limit)
        return [{"run_id": r.run_id, "plan": r.name, "status": r.status, "steps": r.steps} for r in runs[:limit]]

    async def close(self) -> None:
        for task in self.running.values():
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)


def build_server(tools: ParallaxTools) -> MCPServer:
    server: MCPServer = MCPServer("parallax", version=__version__, instructions=INSTRUCTIONS)

    async def call(coro: Any) -> Any:
        try:
            return await coro
        except ParallaxError as e:  # a clear message back to the agent, not a stack trace
            raise ToolError(str(e)) from None

    @server.tool()
    async def start_run(target: str, inputs: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        """Start a pattern (a .yaml file, file.py:attr or module:attr) with optional inputs; it
        runs in the background. Returns the run id and its steps."""
        return await call(tools.start_run(target, inputs, run_id))  # type: ignore[no-any-return]

    @server.tool()
    async def ask_agents(
        question: str, model: str, perspectives: list[str] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Fan one question out to several agents at once (default perspectives: skeptic,
        pragmatist, expert) on `model` (e.g. anthropic:claude-sonnet-4-5); the merge surfaces
        where they disagree. Returns the run id; follow it with watch_run and get_result."""
        return await call(tools.ask_agents(question, model, perspectives, run_id))  # type: ignore[no-any-return]

    @server.tool()
    async def watch_run(run_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait up to timeout_s for a run to finish; returns its status and each step's."""
        return await call(tools.watch_run(run_id, timeout_s))  # type: ignore[no-any-return]

    @server.tool()
    async def get_result(run_id: str) -> dict[str, Any]:
        """A run's result, its conflicts, and every succeeded step's output."""
        return await call(tools.get_result(run_id))  # type: ignore[no-any-return]

    @server.tool()
    async def read_stream(stream: str, start: int = 0, limit: int = 100) -> dict[str, Any]:
        """Records of any stream from seq `start` (at most `limit`, <= 1000)."""
        return await call(tools.read_stream(stream, start, limit))  # type: ignore[no-any-return]

    @server.tool()
    async def post_message(run_id: str, to: str, text: str) -> dict[str, Any]:
        """Post a message into a live run: to a cohort, an agent, the moderator, or a task of a
        task graph (it reads it in its .shared/inbox.md)."""
        return await call(tools.post_message(run_id, to, text))  # type: ignore[no-any-return]

    @server.tool()
    async def task_peers(run_id: str, task: str) -> dict[str, Any]:
        """For a task of a running task graph: the other running tasks, their prompts, write sets
        and the files they have changed so far. Ask one (post_message) before needing its files."""
        return await call(tools.task_peers(run_id, task))  # type: ignore[no-any-return]

    @server.tool()
    async def change_topology(run_id: str, action: dict[str, Any], wait_s: float = 0.0) -> dict[str, Any]:
        """Ask a live run to change shape: {"action": "stop"|"fork"|"merge"|"breakout"|"rewire"|
        "steer"|"phase"|"wrap_up"|"conclude", ...}; with wait_s, wait for the outcome."""
        return await call(tools.change_topology(run_id, action, wait_s))  # type: ignore[no-any-return]

    @server.tool()
    async def list_runs(limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs in the store."""
        return await call(tools.list_runs(limit))  # type: ignore[no-any-return]

    return server


async def serve_stdio(store: StreamStore, options: RunOptions | None = None, settings: Settings | None = None) -> None:
    tools = ParallaxTools(store, options, settings)
    try:
        await build_server(tools).run_stdio_async()
    finally:
        await tools.close()
