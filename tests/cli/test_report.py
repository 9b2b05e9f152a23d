"""A run ends by telling a person what it found (parallax/report.py): the synthesis, each
cohort's final position, the divergence, the merged fields and their conflicts, failures, cost;
`-o report.md` writes the same as Markdown and `parallax inspect` shows it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.test_config import parallax, project_with

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def copy_example(project: Path, name: str) -> None:
    for suffix in (".yaml", ".answers.json"):
        shutil.copy(EXAMPLES / f"{name}{suffix}", project / f"{name}{suffix}")


def test_a_cohorts_run_ends_with_its_answer_in_words(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    copy_example(project, "research")
    answers = json.loads((project / "research.answers.json").read_text())
    summary = answers["synthesis"][0]["summary"]
    result = parallax(project, "run", "research.yaml", "-q", "-o", "report.md", "--run-id", "asked")
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    for heading in ("Synthesis", "Where the cohorts agree", "Recommendation", "final position (round 2)", "Divergence"):
        assert heading in shown, heading
    assert summary in shown
    for cohort, members in (("builders", "builder-a"), ("operators", "operator-b"), ("finance", "finance-a")):
        assert f"\n  {cohort}\n" in shown and members in shown
    assert '{"' not in shown  # no raw JSON for a person to read
    report = (project / "report.md").read_text()
    assert report.startswith("# asked\n") and "## Synthesis" in report and summary in report
    assert "### operators" in report and "## Divergence" in report
    inspected = parallax(project, "inspect", "asked")
    assert inspected.returncode == 0, inspected.stderr
    assert summary in inspected.stdout and "final position" in inspected.stdout


def test_a_fan_out_shows_its_fields_and_conflicts_and_a_failure_says_so(tmp_path: Path) -> None:
    project = project_with(tmp_path, "")
    copy_example(project, "fanout")
    result = parallax(project, "run", "fanout.yaml", "-q")
    assert result.returncode == 0, result.stderr
    assert "verdict: changes needed" in result.stdout and "ttl_seconds: 300" in result.stdout
    assert "Conflicts\n" in result.stdout and "disagreement at verdict" in result.stdout
    answers = json.loads((project / "fanout.answers.json").read_text())
    answers["performance"] = [{"__error__": {"status": 400, "body": "the model refused"}}]
    (project / "fanout.answers.json").write_text(json.dumps(answers))
    failed = parallax(project, "run", "fanout.yaml", "-q", "--no-cache")
    assert failed.returncode == 1
    assert "failed:" in failed.stdout and "Failed steps" in failed.stdout and "performance:" in failed.stdout
