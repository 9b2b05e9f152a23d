"""The terminal lanes read well (cli/lanes.py, cli/readable.py): an agent's text as text, a
structured answer as its fields (while it streams, half-written, and once recorded, replacing
what streamed), a cohorts run grouped by cohort, a task graph one row per task."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from parallax.cli.lanes import LaneView
from parallax.cli.readable import output_line, partial_fields, readable
from parallax.core.tasks import TaskBoard, TaskGraphSpec
from parallax.engine import api
from parallax.engine.runner import Runner
from parallax.patterns.yaml_loader import load_pattern
from parallax.streams.sqlite import SqliteStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_structured_answers_read_as_fields_even_half_written() -> None:
    streamed = '{\n "position": "Extract only the payments service",\n "reasoning": "it blocks rel'
    assert partial_fields(streamed) == {"position": "Extract only the payments service", "reasoning": "it blocks rel"}
    assert readable(streamed) == "Extract only the payments service · reasoning: it blocks rel"
    assert readable("Line one\nline two") == "Line one line two"
    assert readable('{"verdict": "approve", "confidence": 0.8, "stance": null}') == "approve"
    decision = {
        "reasoning": "stable",
        "actions": [{"action": "steer", "to": "ops", "text": "x"}, {"action": "conclude"}],
    }
    assert output_line(decision) == "steer ops, conclude · reasoning: stable"
    assert output_line({"risks": ["a", "b"], "summary": "S"}) == "S · risks: a; b"


async def test_a_cohorts_run_is_grouped_by_cohort_with_no_raw_json(tmp_path: Path) -> None:
    for suffix in (".yaml", ".answers.json"):
        shutil.copy(EXAMPLES / f"research{suffix}", tmp_path / f"research{suffix}")
    async with SqliteStore(tmp_path / "p.db") as store:
        run_id = await api.create_run(store, load_pattern(tmp_path / "research.yaml"))
        await Runner(store, run_id).run()
        console = Console(record=True, width=240, force_terminal=False)
        view = LaneView(store, run_id, console)
        view.live = False
        state = await view.follow()
        console.print(view.render())
    shown = console.export_text()
    assert state.status == "succeeded"
    table = shown[shown.index(f"run {run_id}  succeeded") :]
    for cohort, member in (("builders", "builder-a r2"), ("operators", "operator-b r2"), ("finance", "finance-a r2")):
        assert f"\n{cohort} " in table and member in table
    assert "builder-a r1" not in table  # only each member's latest turn
    assert "round 2" in table and "synthesis" in table
    assert "Not a wholesale move this year" in table  # the synthesis, as text
    assert '{"' not in shown and '"position"' not in shown  # never a raw JSON tail


def test_a_lane_shows_the_recorded_output_instead_of_what_streamed(tmp_path: Path) -> None:
    view = LaneView(None, "r", Console(record=True, width=200))  # type: ignore[arg-type]
    from parallax.core import events as ev
    from parallax.core.events import Event
    from parallax.core.plan import AgentSpec, Plan, Step

    plan = Plan(name="p", steps=(Step(id="a", kind="agent", agent=AgentSpec(kind="python", ref="m:f")),))
    view.state.plan = plan
    view.state.apply(Event(ev.RUN_CREATED, {"run_id": "r", "plan": plan.model_dump(mode="json")}))
    view.state.apply(Event(ev.STEP_STARTED, {"attempt": 1}, step="a"))
    view._on_agent_event(view._lane("a"), Event(ev.AGENT_CHUNK, {"text": '{"verdict": "appro'}))
    assert view._said("a") == "appro"
    view.state.apply(Event(ev.STEP_OUTPUT, {"output": {"verdict": "approve", "ttl": 60}, "attempt": 1}, step="a"))
    assert view._said("a") == "approve · ttl: 60"  # replaced, not appended


def test_a_task_graph_shows_one_row_per_task() -> None:
    spec = TaskGraphSpec.model_validate(
        {"tasks": [{"id": "api", "prompt": "x", "writes": ["src/api/**"], "agent": {"kind": "command", "command": "true"}},
                   {"id": "ui", "prompt": "y", "writes": ["web/**"], "agent": {"kind": "command", "command": "true"}}]}
    )  # fmt: skip
    view = LaneView(None, "r", Console(record=True, width=200))  # type: ignore[arg-type]
    view.state.tasks = TaskBoard.of(spec)
    console = Console(record=True, width=200)
    console.print(view.render())
    shown = console.export_text()
    assert "tasks" in shown
    for task, writes in (("api", "src/api/**"), ("ui", "web/**")):
        line = next(line for line in shown.splitlines() if line.startswith(task + " "))
        assert "ready" in line and writes in line  # no dependencies: both ready to claim
