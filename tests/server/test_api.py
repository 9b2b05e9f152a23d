"""The HTTP API in-process (FastAPI's TestClient runs the real app and its lifespan against a
real SQLite file): auth for every kind of bad token, run-scoped tokens kept to their run, runs
created from YAML and followed to the end, streams read and tailed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from parallax.cli import cli
from parallax.server.app import create_app
from parallax.server.auth import Tokens, load_or_create_token

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(f"sqlite://{tmp_path / 'api.db'}", TOKEN)) as test_client:
        yield test_client


def wait_finished(client: TestClient, run_id: str, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    deadline = time.monotonic() + 120  # a deadline: only a run that never finishes waits this long
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/runs/{run_id}", headers=headers).json()
        if run["status"] in ("succeeded", "failed", "cancelled", "budget_exhausted"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def create_fanout(client: TestClient) -> str:
    pattern = (
        (ROOT / "examples" / "fanout.yaml")
        .read_text()
        .replace("scripted:fanout.answers.json", f"scripted:{ROOT / 'examples' / 'fanout.answers.json'}")
    )
    response = client.post("/runs", json={"pattern": pattern}, headers=ADMIN)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def test_a_run_from_yaml_runs_in_the_server(client: TestClient) -> None:
    run_id = create_fanout(client)
    run = wait_finished(client, run_id)
    assert run["status"] == "succeeded"
    assert sorted(c["path"] for c in run["conflicts"]) == ["ttl_seconds", "verdict"]
    assert [r["run_id"] for r in client.get("/runs", headers=ADMIN).json()] == [run_id]
    records = client.get(f"/streams/runs/{run_id}/control/records", headers=ADMIN).json()
    assert records[0]["headers"]["type"] == "run.created"
    assert records[-1]["headers"]["type"] == "run.finished"
    assert [r["seq"] for r in records] == list(range(len(records)))
    listed = client.get("/streams", params={"prefix": f"runs/{run_id}/agents/"}, headers=ADMIN).json()
    assert sorted(s["name"].rsplit("/", 1)[1] for s in listed) == ["correctness", "operations", "performance"]
    metrics = client.get("/metrics", headers=ADMIN).text
    assert "parallax_runs_started_total 1" in metrics


def test_bad_input_is_a_clear_error(client: TestClient) -> None:
    bad = client.post("/runs", json={"pattern": "pattern: fanout\nname: x\nagents: {a: {}}\n"}, headers=ADMIN)
    assert bad.status_code == 400
    assert "<request>:3:" in bad.text and "needs a model" in bad.text
    both = client.post("/runs", json={"pattern": "x", "target": "y"}, headers=ADMIN)
    assert both.status_code == 422
    neither = client.post("/runs", json={"pattern": "", "target": None}, headers=ADMIN)  # was a 500
    assert neither.status_code == 400 and "exactly one of target" in neither.text
    assert client.get("/runs/nope", headers=ADMIN).status_code == 404
    assert client.get("/runs", headers=ADMIN).json() == []  # nothing was created


def test_every_bad_token_is_refused(client: TestClient) -> None:
    run_id = create_fanout(client)
    other = create_fanout(client)
    wait_finished(client, run_id)
    wait_finished(client, other)
    assert client.get("/health").status_code == 200  # the one open endpoint
    assert client.get("/runs").status_code == 401  # missing
    assert client.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401  # wrong
    scoped = client.post(f"/runs/{run_id}/tokens", json={"ttl_s": 60}, headers=ADMIN).json()["token"]
    mine = {"Authorization": f"Bearer {scoped}"}
    assert client.get(f"/runs/{run_id}", headers=mine).status_code == 200
    assert client.get(f"/streams/runs/{run_id}/control/records", headers=mine).status_code == 200
    assert client.get(f"/runs/{other}", headers=mine).status_code == 403  # another run
    assert client.get(f"/streams/runs/{other}/control/records", headers=mine).status_code == 403
    assert client.get("/streams", params={"prefix": "runs/"}, headers=mine).status_code == 403
    assert client.get("/runs", headers=mine).status_code == 403  # admin only
    assert client.post(f"/runs/{other}/tokens", json={}, headers=mine).status_code == 403
    expired, _ = Tokens(TOKEN).issue(run_id, -5)
    assert client.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    forged = scoped.rsplit(".", 1)[0] + ".AAAA"
    assert client.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    other_server, _ = Tokens("another-admin").issue(run_id, 60)
    assert client.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {other_server}"}).status_code == 401
    # SSE takes the token as a query parameter (EventSource cannot set headers); same rules
    assert client.get(f"/runs/{other}/events", params={"token": scoped}).status_code == 403


def test_sse_tail_resumes_from_last_event_id(client: TestClient) -> None:
    run_id = create_fanout(client)
    wait_finished(client, run_id)
    total = len(client.get(f"/streams/runs/{run_id}/control/records", headers=ADMIN).json())

    def read_events(headers: dict[str, str], want: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        with client.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            current: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith("id: "):
                    current["id"] = int(line[4:])
                elif line.startswith("data: "):
                    current["data"] = json.loads(line[6:])
                elif not line and "data" in current:
                    events.append(current)
                    current = {}
                    if len(events) == want:
                        break
        return events

    first = read_events(ADMIN, total)
    assert [e["id"] for e in first] == list(range(total))
    rest = read_events({**ADMIN, "Last-Event-ID": "3"}, total - 4)
    assert [e["id"] for e in rest] == list(range(4, total))


def test_non_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", f"sqlite://{tmp_path / 's.db'}", "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without PARALLAX_TOKEN" in result.output


def test_the_generated_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "server-token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == token  # kept across restarts
