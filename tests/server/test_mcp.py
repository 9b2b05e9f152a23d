"""`parallax mcp` over stdio, driven by the MCP SDK's own client (a real subprocess)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        content = result.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(result.content[0].text)


def params(tmp_path: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "parallax", "--store", f"sqlite://{tmp_path / 'mcp.db'}", "mcp"],
        env=env,
        cwd=ROOT,
    )


async def test_tools_over_stdio(tmp_path: Path) -> None:
    async with Client(params(tmp_path)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools >= {"start_run", "ask_agents", "watch_run", "get_result", "read_stream", "post_message",
                         "change_topology", "list_runs", "task_peers"}  # fmt: skip

        started = structured(await client.call_tool("start_run", {"target": "examples/fanout.yaml", "run_id": "m1"}))
        assert started["run_id"] == "m1"
        assert set(started["steps"]) == {"performance", "correctness", "operations", "merge"}
        watched = structured(await client.call_tool("watch_run", {"run_id": "m1", "timeout_s": 60}))
        assert watched["status"] == "succeeded"
        assert watched["steps"] == dict.fromkeys(started["steps"], "succeeded")
        result = structured(await client.call_tool("get_result", {"run_id": "m1"}))
        assert result["conflicts"], "the three scripted reviewers disagree; the merge says where"
        assert set(result["outputs"]) == set(started["steps"])

        log = structured(await client.call_tool("read_stream", {"stream": "runs/m1/control", "limit": 3}))
        assert [r["seq"] for r in log["records"]] == [0, 1, 2]
        assert log["records"][0]["headers"]["type"] == "run.created"

        asked = structured(
            await client.call_tool(
                "ask_agents", {"question": "Cache the orders API?", "model": "test", "perspectives": ["a", "b"]}
            )
        )
        done = structured(await client.call_tool("watch_run", {"run_id": asked["run_id"], "timeout_s": 60}))
        assert done["status"] == "succeeded"
        assert set(done["steps"]) == {"a", "b", "merge"}
        runs = structured(await client.call_tool("list_runs", {}))
        assert {r["run_id"] for r in runs} == {"m1", asked["run_id"]}


async def test_bad_input_is_a_clear_tool_error(tmp_path: Path) -> None:
    async with Client(params(tmp_path)) as client:
        missing = await client.call_tool("start_run", {"target": "no/such/pattern.yaml"})
        assert missing.is_error
        assert "cannot read the pattern" in missing.content[0].text
        unknown = await client.call_tool("watch_run", {"run_id": "nope", "timeout_s": 1})
        assert unknown.is_error
        assert "nope" in unknown.content[0].text
        action = await client.call_tool("change_topology", {"run_id": "nope", "action": {"action": "dance"}})
        assert action.is_error


async def test_task_peers_shows_what_the_other_running_tasks_touch(tmp_path: Path) -> None:
    from parallax.core.events import Event
    from parallax.core.tasks import TASK_CLAIMED, TASK_PROGRESS, TASK_STARTED
    from parallax.engine import api
    from parallax.engine.control import control_stream
    from parallax.patterns.yaml_loader import compile_pattern
    from parallax.server.mcp_tools import ParallaxTools
    from parallax.streams.base import AppendInput
    from parallax.streams.folded import event_record
    from parallax.streams.sqlite import SqliteStore

    text = (
        "pattern: tasks\nname: g\ntasks:\n"
        "  api: {prompt: 'Add the endpoint', writes: ['api/**'], agent: {kind: command, command: 'true'}}\n"
        "  ui: {prompt: 'Add the page', writes: ['ui/**'], agent: {kind: command, command: 'true'}}\n"
    )
    async with SqliteStore(tmp_path / "p.db") as store:
        run_id = await api.create_run(store, compile_pattern(text), run_id="g")
        worker = {"task": "api", "worker": "w", "attempt": 1}
        events = [
            Event(TASK_CLAIMED, {**worker, "lease_until": 2**62}, step="tasks"),
            Event(TASK_STARTED, {**worker, "base": "x"}, step="tasks"),
            Event(TASK_PROGRESS, {**worker, "changed": ["api/routes.py"]}, step="tasks"),
        ]
        await store.append(control_stream(run_id), AppendInput([event_record(e) for e in events]))
        tools = ParallaxTools(store)
        seen = await tools.task_peers(run_id, "ui")
        assert seen["peers"] == [
            {"task": "api", "status": "running", "prompt": "Add the endpoint", "writes": ["api/**"],
             "changed": ["api/routes.py"]}
        ]  # fmt: skip
        assert (await tools.task_peers(run_id, "api"))["peers"] == []  # itself is not its peer
        await tools.close()
