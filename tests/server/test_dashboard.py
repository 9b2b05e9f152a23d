"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright against a
real `parallax serve`. A run starts while the page is open; its lanes appear, stream, finish,
and the conflicts panel fills. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.server.live_server import serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-test-token"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def post(base: str, path: str, body: dict[str, object]) -> dict[str, str]:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, str] = json.loads(response.read())
        return result


def test_lanes_stream_and_conflicts_fill(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    answers = json.loads((ROOT / "examples" / "fanout.answers.json").read_text())
    answers["_settings"] = {"chunk_delay_s": 0.08}  # slow enough to watch the lanes stream
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    pattern = (
        (ROOT / "examples" / "fanout.yaml")
        .read_text()
        .replace("scripted:fanout.answers.json", f"scripted:{tmp_path / 'answers.json'}")
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(tmp_path / "ui.db", TOKEN, tmp_path / "server.log") as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/?token={TOKEN}")
            expect(page.locator("#runs")).to_be_visible()
            run_id = post(base, "/runs", {"pattern": pattern, "run_id": "ui-run"})["run_id"]
            page.goto(f"{base}/#/runs/{run_id}")
            lanes = page.locator(".lane")
            expect(lanes).to_have_count(4, timeout=15_000)  # three reviewers and the merge
            expect(page.locator('.lane[data-status="running"]').first).to_be_visible(timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard-running.png"), full_page=True)
            expect(page.locator('.lane[data-step="performance"] pre')).not_to_be_empty(timeout=15_000)
            expect(page.locator('.lane[data-status="succeeded"]')).to_have_count(4, timeout=30_000)
            expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded", timeout=15_000)
            conflicts = page.locator("#conflicts .conflict")
            expect(conflicts).to_have_count(2)
            expect(conflicts.first).to_contain_text("disagreement")
            page.screenshot(path=str(ARTIFACTS / "dashboard-finished.png"), full_page=True)
            page.goto(f"{base}/#/")
            expect(page.locator("#runs")).to_contain_text("ui-run")
            expect(page.locator("#runs")).to_contain_text("succeeded")
        finally:
            browser.close()


def test_an_approval_gate_is_decided_from_the_dashboard(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    pattern = (
        (ROOT / "examples" / "approval.yaml")
        .read_text()
        .replace("scripted:approval.answers.json", f"scripted:{ROOT / 'examples' / 'approval.answers.json'}")
    )
    with serve(tmp_path / "gate.db", TOKEN, tmp_path / "server.log") as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/?token={TOKEN}")
            run_id = post(base, "/runs", {"pattern": pattern, "run_id": "gate-run"})["run_id"]
            page.goto(f"{base}/#/runs/{run_id}")
            gate = page.locator('.lane[data-step="publish-ok"]')
            expect(gate).to_have_attribute("data-status", "waiting", timeout=15_000)
            gate.locator("button.approve").click()
            expect(page.locator("#summary")).to_have_attribute("data-status", "succeeded", timeout=15_000)
            expect(page.locator('.lane[data-step="publish"]')).to_have_attribute("data-status", "succeeded")
            request = urllib.request.Request(f"{base}/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                steps = {s["id"]: s for s in json.loads(response.read())["steps"]}
            assert steps["publish-ok"]["output"]["by"] == "dashboard"
        finally:
            browser.close()
