"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright against a
real `parallax serve`. For each example pattern (fan-out with conflicts, cohorts, a task graph
with a review queue) the page shows its view while the run is live and after it ends; the
timeline forks a run; gates and the review queue are decided from the page; no lane shows its
text twice; hostile agent output stays text; the page survives a server restart without losing
or repeating events. Screenshots of each view go to test-artifacts/ (docs/img/ has copies)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.server.live_server import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-test-token"
TIMEOUT = 60_000  # ms: Playwright's auto-waiting deadline; a passing test waits only as long as it must

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}", data=None if body is None else json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def post(base: str, path: str, body: dict[str, Any]) -> Any:
    return call(base, "POST", path, body)


def events_of(base: str, run_id: str) -> list[dict[str, Any]]:
    """The run's control events (records with a type: not a lease's)."""
    records: list[dict[str, Any]] = call(base, "GET", f"/streams/runs/{run_id}/control/records")
    return [r for r in records if r["headers"].get("type")]


def example(tmp_path: Path, name: str, chunk_delay_s: float = 0.0, hold: Path | None = None) -> str:
    """examples/<name>.yaml with its scripted answers (slowed down by `chunk_delay_s` per chunk;
    with `hold`, each answer stops after its first chunk until that file exists, so that the page
    can be watched mid-run for as long as a test needs)."""
    answers = json.loads((ROOT / "examples" / f"{name}.answers.json").read_text())
    if chunk_delay_s or hold:
        answers["_settings"] = {"chunk_delay_s": chunk_delay_s, **({"hold_until": str(hold)} if hold else {})}
    (tmp_path / f"{name}.answers.json").write_text(json.dumps(answers))
    return (
        (ROOT / "examples" / f"{name}.yaml")
        .read_text()
        .replace(f"scripted:{name}.answers.json", f"scripted:{tmp_path / f'{name}.answers.json'}")
    )


@contextmanager
def browser_page(base: str) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT)
            page.goto(f"{base}/?token={TOKEN}")
            yield page
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def assert_no_lane_repeats(page: Any, texts: dict[str, list[str]]) -> None:
    """Each lane shows each of the given texts exactly once (the streamed text was replaced by
    the output, not followed by it)."""
    for step, wanted in texts.items():
        shown = page.locator(f'.lane[data-step="{step}"]').inner_text()
        for text in wanted:
            assert shown.count(text) == 1, f"{step} shows {text!r} {shown.count(text)} times: {shown!r}"


def test_fanout_merge_view_live_and_after(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    release = tmp_path / "release"
    pattern = example(tmp_path, "fanout", chunk_delay_s=0.02, hold=release)
    with serve(tmp_path / "ui.db", TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        expect(page.locator("#runs")).to_be_visible()
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "ui-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        # live (the scripted answers are held after their first chunk): the lanes stream text,
        # the merge waits for its contributions
        expect(page.locator(".lane")).to_have_count(4)  # three reviewers and the merge
        expect(page.locator('#merge-view .merge[data-state="waiting"]')).to_be_visible()
        expect(page.locator('.lane[data-step="performance"] .stream')).to_contain_text("verdict")
        shot(page, "fanout-live.png")
        release.touch()
        # after: the merged document as fields, conflicts at their fields, side by side
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        merged = page.locator('#merge-view .merge[data-state="merged"]')
        expect(merged).to_be_visible()
        verdict = merged.locator('tr.conflict[data-path="verdict"]')
        expect(verdict.locator(".contrib")).to_have_count(3)
        expect(verdict.locator('.contrib[data-agent="correctness"]')).to_contain_text("changes needed")
        expect(verdict.locator('.contrib[data-agent="correctness"]')).to_contain_text("conf 0.70")
        expect(
            merged.locator('tr.conflict[data-path="ttl_seconds"] .contrib[data-agent="operations"]')
        ).to_contain_text("300")
        expect(merged.locator("tr.conflict")).to_have_count(2)
        expect(merged.locator('tr[data-path="risks"] .contrib[data-agent="operations"]')).to_contain_text(
            "cache cluster sizing"
        )
        expect(page.locator('.lane[data-step="performance"] .output dd[data-field="verdict"]')).to_have_text("approve")
        assert "{" not in page.locator("#merge-view").inner_text()  # fields, not JSON
        assert_no_lane_repeats(
            page,
            {"performance": ["cold start after deploy", "approve"], "correctness": ["stale reads between write"],
             "operations": ["cache cluster sizing"]},
        )  # fmt: skip
        expect(page.locator("#timeline tbody tr").last).to_have_attribute("data-type", "run.finished")
        expect(page.locator("#cost-chart svg")).to_be_visible()
        shot(page, "fanout-merged.png")
        # the runs list: pattern, live counts, cost, times; filtered by status and name
        page.goto(f"{base}/#/")
        row = page.locator('#runs tr[data-run="ui-run"]')
        expect(row).to_contain_text("fanout")
        expect(row.locator(".steps")).to_have_text("4/4")
        page.select_option("#status-filter", "failed")
        expect(row).to_have_count(0)
        page.select_option("#status-filter", "succeeded")
        expect(row).to_have_count(1)
        page.fill("#name-filter", "nothing-like-it")
        expect(row).to_have_count(0)
        page.fill("#name-filter", "design")
        expect(row).to_have_count(1)
        shot(page, "runs-list.png")


def test_cohorts_view_live_and_after(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    release = tmp_path / "release"
    pattern = example(tmp_path, "research", chunk_delay_s=0.01, hold=release)
    with serve(tmp_path / "co.db", TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        expect(page.locator("#runs")).to_be_visible()
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "co-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        # live: a column per cohort, turns streaming in them
        expect(page.locator("#cohort-grid .cohort-head")).to_have_count(3)
        column = page.locator('#cohort-grid .turns[data-cohort="operators"][data-round="1"]')
        expect(column.locator(".lane")).to_have_count(2)
        expect(page.locator('#cohort-grid .lane[data-status="running"]').first).to_be_visible()
        shot(page, "cohorts-live.png")
        release.touch()  # the held answers go on
        # the moderator's decisions between rounds, grown rounds drawn as they come
        band = page.locator('#cohort-grid .band[data-round="1"]')
        expect(band.locator('.decision[data-action="steer"]')).to_have_count(2)
        expect(band.locator('.decision[data-action="steer"]').first).to_contain_text("builders")
        expect(page.locator('#cohort-grid .turns[data-cohort="finance"][data-round="2"] .lane')).to_have_count(2)
        # after: the synthesis at the top, divergence per pair
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        expect(page.locator("#synthesis-slot .lane .synthesis")).to_contain_text("Not a wholesale move this year")
        expect(page.locator('#cohort-grid .band[data-round="2"] .decision[data-action="conclude"]')).to_be_visible()
        expect(page.locator("#divergence td[data-pair]")).to_have_count(6)  # 3 pairs, both halves
        expect(page.locator('#divergence td[data-pair="builders|operators"]').first).to_contain_text("✗")
        assert page.locator("#lanes .lane").count() == 0  # every turn sits in its cohort's column
        assert_no_lane_repeats(
            page,
            {"operators.operator-a.2": ["Not this year; invest in observability"],
             "synthesis": ["Not a wholesale move this year"],
             "moderator.1": ["Who carries the pager"]},
        )  # fmt: skip
        shot(page, "cohorts-final.png")
        page.goto(f"{base}/#/")
        row = page.locator('#runs tr[data-run="co-run"]')
        expect(row.locator(".steps")).to_have_text("19/19")  # the grown run's steps, not the plan's 7
        expect(row).to_contain_text("cohorts")


def test_timeline_forks_cancels_and_shows_the_control_log(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    pattern = example(tmp_path, "fanout")
    with serve(tmp_path / "tl.db", TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "tl-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        records = events_of(base, run_id)
        rows = page.locator("#timeline tbody tr")
        expect(rows).to_have_count(len(records))
        assert rows.evaluate_all("rows => rows.map(r => Number(r.dataset.seq))") == [r["seq"] for r in records]
        shot(page, "timeline.png")
        # fork after the first reviewer's output: a new run, keeping the log up to it
        first_output = next(r["seq"] for r in records if r["headers"]["type"] == "step.output")
        page.locator(f'#timeline button.fork[data-seq="{first_output}"]').click()
        expect(page).not_to_have_url(f"{base}/#/runs/{run_id}")
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        forked_id = page.url.split("#/runs/", 1)[1]
        forked = call(base, "GET", f"/runs/{forked_id}")
        assert forked["forked_from"] == [run_id, first_output + 1]
        expect(page.locator("#summary")).to_contain_text(f"forked from {run_id}")
        # cancel from the header: a gate waits, so the run is live until cancelled
        gate = example(tmp_path, "approval")
        gate_id = post(base, "/runs", {"pattern": gate, "run_id": "cancel-run"})["run_id"]
        page.goto(f"{base}/#/runs/{gate_id}")
        expect(page.locator('.lane[data-step="publish-ok"]')).to_have_attribute("data-status", "waiting")
        page.locator("#cancel").click()
        expect(page.locator("#summary")).to_have_attribute("data-status", "cancelled")
        expect(page.locator("#cancel")).to_have_count(0)


def test_an_approval_gate_is_decided_from_the_dashboard(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    pattern = example(tmp_path, "approval")
    with serve(tmp_path / "gate.db", TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "gate-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        gate = page.locator('.lane[data-step="publish-ok"]')
        expect(gate).to_have_attribute("data-status", "waiting")
        gate.locator("button.approve").click()
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        expect(page.locator('.lane[data-step="publish"]')).to_have_attribute("data-status", "succeeded")
        steps = {s["id"]: s for s in call(base, "GET", f"/runs/{run_id}")["steps"]}
        assert steps["publish-ok"]["output"]["by"] == "dashboard"


def test_hostile_agent_output_is_shown_as_text(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    hostile = (
        '# Findings\n\n- **bold** and `code`\n- <img src=x onerror="window.__xss=1">\n\n'
        "<script>window.__xss=2</script>\n\n```html\n<iframe src=javascript:window.__xss=3></iframe>\n```\n"
    )
    (tmp_path / "answers.json").write_text(json.dumps({"writer": [hostile], "_settings": {"chunk_delay_s": 0.02}}))
    pattern = yaml.safe_dump({
        "pattern": "fanout", "name": "hostile", "model": f"scripted:{tmp_path / 'answers.json'}",
        "agents": {"writer": {"prompt": "Write."}},
    })  # fmt: skip
    with serve(tmp_path / "x.db", TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "x-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        lane = page.locator('.lane[data-step="writer"]')
        # While it streams, the text goes through the same DOM-only renderer; the stream may come in
        # one group on a loaded machine, so only the end state is asserted (no element was ever made:
        # window.__xss would be set by any of them).
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        expect(lane.locator(".output h4")).to_have_text("Findings")  # the agent's Markdown, rendered
        expect(lane.locator(".output strong")).to_have_text("bold")
        expect(lane.locator(".output")).to_contain_text('<img src=x onerror="window.__xss=1">')
        expect(lane.locator(".output")).to_contain_text("<script>window.__xss=2</script>")
        assert page.locator("#app img, #app script, #app iframe").count() == 0
        assert page.evaluate("window.__xss") is None
        assert_no_lane_repeats(page, {"writer": ["<script>window.__xss=2</script>"]})


def test_a_task_graph_review_queue_from_the_dashboard(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from tests.workspaces.test_parallel_coding import init_repo

    repo = init_repo(tmp_path / "repo", {"a.txt": ""})
    doc = {
        "pattern": "tasks", "name": "queue", "workers": 1, "review_queue": True,
        "tasks": {
            "style": {"prompt": "Write the style guide.", "writes": ["style.txt"],
                      "agent": {"kind": "command", "command": "printf '%s\\n' {{prompt}} > style.txt"}},
            "notes": {"prompt": "Note it.", "after": ["style"], "writes": ["notes.txt"],
                      "agent": {"kind": "command", "command": "echo noted > notes.txt"}},
        },
    }  # fmt: skip
    db = tmp_path / "t.db"
    with serve(db, TOKEN, tmp_path / "server.log", cwd=repo) as (base, _), browser_page(base) as page:
        run_id = post(base, "/runs", {"pattern": yaml.safe_dump(doc), "run_id": "t-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        style = page.locator('#task-graph .task[data-task="style"]')
        expect(page.locator("#task-graph .task")).to_have_count(2)
        expect(page.locator('#task-graph .task[data-task="notes"]')).to_contain_text("after style")
        expect(style).to_contain_text("writes style.txt")
        expect(style).to_have_attribute("data-status", "succeeded")
        expect(style).to_contain_text("waiting for review")
        style.click()
        diff = page.locator('#task-detail pre.diff[aria-label="diff of style"]')
        expect(diff.locator(".add")).to_contain_text("+Write the style guide.")
        expect(diff.locator(".meta").first).to_contain_text("diff --git")
        page.locator('#task-detail [data-task="style"] button.approve').click()
        expect(page.locator("#task-detail .outcome")).to_contain_text("merged style")
        expect(style).to_have_attribute("data-status", "merged")
        expect(style).to_contain_text("integrated")
        notes = page.locator('#task-graph .task[data-task="notes"]')
        expect(notes).to_have_attribute("data-status", "succeeded")
        notes.click()
        expect(page.locator('#task-detail pre.diff[aria-label="diff of notes"] .add')).to_contain_text("+noted")
        shot(page, "tasks-review.png")
        page.fill("#review-note", "say more")
        page.locator('#task-detail [data-task="notes"] button.reject').click()
        expect(page.locator("#task-detail .outcome")).to_contain_text("sent notes back")
        expect(notes).to_contain_text("sent back: dashboard: say more")
        expect(notes).to_contain_text("attempt 2")
        expect(notes).to_have_attribute("data-status", "succeeded")
        notes.click()
        page.locator('#task-detail [data-task="notes"] button.approve').click()
        expect(page.locator("#task-detail .outcome")).to_contain_text("merged notes")
        expect(notes).to_have_attribute("data-status", "merged")
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        shot(page, "tasks-merged.png")


def test_the_page_reconnects_after_a_server_restart_without_losing_events(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    release = tmp_path / "release"
    pattern = example(tmp_path, "fanout", chunk_delay_s=0.02, hold=release)
    db, log, port = tmp_path / "rs.db", tmp_path / "server.log", free_port()
    with serve(db, TOKEN, log, port=port) as (base, first), browser_page(base) as page:
        run_id = post(base, "/runs", {"pattern": pattern, "run_id": "rs-run"})["run_id"]
        page.goto(f"{base}/#/runs/{run_id}")
        expect(page.locator('.lane[data-step="performance"] .stream')).to_contain_text("verdict")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        first.kill()  # the server goes away mid-run (its run with it)
        first.wait(timeout=60)
        expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        with serve(db, TOKEN, log, port=port) as (again, _):
            assert again == base
            expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            release.touch()  # the resumed agents' answers are no longer held
            post(base, f"/runs/{run_id}/resume", {})  # appends the rest of the run's events
            expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
            records = events_of(base, run_id)
            rows = page.locator("#timeline tbody tr")
            expect(rows).to_have_count(len(records))  # every control record, once
            seqs = rows.evaluate_all("rows => rows.map(r => Number(r.dataset.seq))")
            assert seqs == [r["seq"] for r in records]
            assert_no_lane_repeats(page, {"operations": ["cache cluster sizing"], "performance": ["approve"]})


def test_a_stalled_run_says_so_and_resumes(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from tests.server.test_api import make_stalled

    db = tmp_path / "st.db"
    make_stalled(db, example(tmp_path, "fanout"), "stalled-run")
    with serve(db, TOKEN, tmp_path / "server.log") as (base, _), browser_page(base) as page:
        page.goto(f"{base}/#/")
        expect(page.locator('#runs tr[data-run="stalled-run"]')).to_have_attribute("data-status", "stalled")
        page.goto(f"{base}/#/runs/stalled-run")
        expect(page.locator("#stalled")).to_be_visible()
        expect(page.locator("#run-status")).to_have_text("stalled")
        shot(page, "stalled.png")
        page.locator("#stalled button").click()
        expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded")
        expect(page.locator("#stalled")).to_be_hidden()
