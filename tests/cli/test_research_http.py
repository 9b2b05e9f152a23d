"""`parallax research` on the llm path over HTTP: the real OpenAI client pointed (by
OPENAI_BASE_URL, as a user with an OpenAI-compatible endpoint would) at a fake OpenAI-compatible
server on loopback (tests/agents/fake_openai.py, a test double at the HTTP boundary). The
designer's call, the members' turns, the moderator and a streamed synthesis all go through it."""

from __future__ import annotations

from pathlib import Path

from tests.agents.fake_openai import FakeOpenAI
from tests.cli.test_config import parallax, project_with


def tool(arguments: dict[str, object]) -> dict[str, object]:
    return {"tool": {"name": "final_result", "arguments": arguments}}


def test_research_through_an_openai_compatible_server(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    design = {
        "method": "debate",
        "rationale": "a yes-or-no question",
        "cohorts": [{"name": "for", "lens": "the case for", "agents": 1},
                    {"name": "against", "lens": "the case against", "agents": 1}],
        "phases": [{"name": "opening", "prompt": "Make your case."}],
        "rounds_per_phase": 1,
        "moderator": "Conclude after the openings.",
        "synthesis": "Summary, agreements, disagreements, recommendation.",
    }  # fmt: skip
    turn = {"position": "Yes, but only the payments service.", "reasoning": "it blocks releases", "confidence": 0.7}
    synthesis = {
        "summary": "Extract payments this year; keep the rest a modular monolith.",
        "agreements": ["module boundaries first"],
        "disagreements": ["timing of the extraction"],
        "recommendation": "Payments in Q3.",
        "confidence": 0.7,
    }
    script = [
        tool(design),
        tool({**turn, "stance": "yes"}),
        tool({**turn, "position": "No: not with four people on call.", "stance": "no"}),
        tool({"reasoning": "both cases are made", "actions": [{"action": "conclude"}]}),
        tool(synthesis),
    ]
    with FakeOpenAI(script) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-fake"}
        result = parallax(
            project, "research", "Should we split out the payments service?", "--model", "openai-chat:gpt-4.1-mini",
            "--yes", "-q", "--run-id", "over-http", env=env,
        )  # fmt: skip
        requests = list(server.requests)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The estimate came before the first model call (the designer's), priced for the model.
    assert "research-design + research:" in out and "openai-chat:gpt-4.1-mini" in out
    assert out.index("research-design + research:") < out.index("designing the method")
    assert "method: debate, 2 cohorts (for, against)" in out
    assert synthesis["summary"] in out and "0 of 1 pairs of cohorts agree" in out
    assert len(requests) == 5
    assert all(r["model"] == "gpt-4.1-mini" and r.get("stream") for r in requests)  # streamed, synthesis included
    designer_tool = requests[0]["tools"][0]["function"]
    assert {"method", "cohorts", "phases"} <= set(designer_tool["parameters"]["properties"])
    assert "Should we split out the payments service?" in str(requests[0]["messages"])
    synthesis_tool = requests[-1]["tools"][0]["function"]
    assert {"summary", "recommendation"} <= set(synthesis_tool["parameters"]["properties"])
