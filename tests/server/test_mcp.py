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
                         "change_topology", "list_runs"}  # fmt: skip

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
