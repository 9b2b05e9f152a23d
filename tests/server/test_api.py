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


def fanout_pattern() -> str:
    return (
        (ROOT / "examples" / "fanout.yaml")
        .read_text()
        .replace("scripted:fanout.answers.json", f"scripted:{ROOT / 'examples' / 'fanout.answers.json'}")
    )


def read_sse(client: TestClient, path: str, headers: dict[str, str], want: int) -> list[dict[str, Any]]:
    """The first `want` events of an SSE endpoint: id, event and data of each."""
    events: list[dict[str, Any]] = []
    with client.stream("GET", path, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif not line and "data" in current:
                events.append(current)
                current = {}
                if len(events) == want:
                    break
    return events


def test_the_live_feed_resumes_from_last_event_id_each_record_once(client: TestClient) -> None:
    run_id = create_fanout(client)
    wait_finished(client, run_id)
    names = [f"runs/{run_id}/control"] + [
        s["name"] for s in client.get("/streams", params={"prefix": f"runs/{run_id}/agents/"}, headers=ADMIN).json()
    ]
    every = {  # the events (a record without a type, such as a lease's, is not one)
        (name, r["seq"])
        for name in names
        for r in client.get(f"/streams/{name}/records", headers=ADMIN).json()
        if r["headers"].get("type")
    }
    first = read_sse(client, f"/runs/{run_id}/live", ADMIN, len(every))
    seen = [(e["data"]["stream"], e["data"]["seq"]) for e in first]
    assert len(set(seen)) == len(seen) and set(seen) == every
    assert len({e["id"] for e in first}) == len(first)  # every event has its own cursor
    for cut in (1, len(first) // 3, len(first) // 2, len(first) - 2):
        rest = read_sse(
            client, f"/runs/{run_id}/live", {**ADMIN, "Last-Event-ID": first[cut - 1]["id"]}, len(every) - cut
        )
        resumed = [(e["data"]["stream"], e["data"]["seq"]) for e in rest]
        assert len(resumed) == len(set(resumed))
        assert set(resumed) == every - set(seen[:cut])  # nothing lost, nothing repeated
        for name in names:  # and each stream in order
            mine = [seq for stream, seq in resumed if stream == name]
            assert mine == sorted(mine)


def test_the_runs_list_and_the_run_carry_what_the_views_need(client: TestClient) -> None:
    pattern = (
        (ROOT / "examples" / "research.yaml")
        .read_text()
        .replace("scripted:research.answers.json", f"scripted:{ROOT / 'examples' / 'research.answers.json'}")
    )
    research = client.post("/runs", json={"pattern": pattern, "run_id": "co"}, headers=ADMIN).json()["run_id"]
    fanout = create_fanout(client)
    run = wait_finished(client, research)
    merged = wait_finished(client, fanout)
    listed = {r["run_id"]: r for r in client.get("/runs", headers=ADMIN).json()}
    row = listed[research]
    assert row["steps"] == len(run["steps"]) == 19  # grown, not the plan's 7
    assert row["succeeded"] == 19 and row["shape"] == "cohorts" and row["status"] == "succeeded"
    assert row["finished_at"] == run["finished_at"] and row["created_at"] <= row["finished_at"]
    assert row["tokens"] == run["usage"]["input_tokens"] + run["usage"]["output_tokens"] > 0
    assert listed[fanout]["shape"] == "fanout" and listed[fanout]["steps"] == 4
    assert run["shape"] == "cohorts" and run["stalled"] is False
    merge = next(s for s in merged["steps"] if s["kind"] == "merge")
    assert merge["sections"] == {"performance": "performance", "correctness": "correctness", "operations": "operations"}
    report = client.get(f"/runs/{research}/report", headers=ADMIN).json()
    assert report["run_id"] == research and report["status"] == "succeeded"
    assert report["sections"][0]["title"].startswith("Synthesis")
    assert any(s["title"] == "Divergence" for s in report["sections"])
    assert client.get("/runs/nope/report", headers=ADMIN).status_code == 404


def make_stalled(db: Path, pattern: str, run_id: str) -> None:
    """A run that is not finished and whose coordinator beat once, long ago by its own clock
    (a beat every millisecond: six missed beats later it is stalled)."""
    import asyncio

    from parallax.engine import api
    from parallax.launch import load_plan
    from parallax.settings import Settings
    from parallax.streams import AppendInput, AppendRecord
    from parallax.streams.sqlite import SqliteStore

    async def go() -> None:
        async with SqliteStore(db) as store:
            plan = load_plan(Settings(), pattern=pattern)
            await api.create_run(store, plan, run_id=run_id)
            beat = json.dumps({"coordinator": "gone", "every_s": 0.001}).encode()
            await store.append(
                f"runs/{run_id}/heartbeat", AppendInput([AppendRecord(body=beat, headers=((b"type", b"heartbeat"),))])
            )

    asyncio.run(go())


def test_a_run_whose_coordinator_is_gone_is_stalled_until_resumed(tmp_path: Path) -> None:
    from tests.waiting import wait_until

    db = tmp_path / "stalled.db"
    make_stalled(db, fanout_pattern(), "st")
    with TestClient(create_app(f"sqlite://{db}", TOKEN)) as client:
        wait_until(lambda: client.get("/runs/st", headers=ADMIN).json()["stalled"], what="the run to be stalled")
        assert [r["status"] for r in client.get("/runs", headers=ADMIN).json()] == ["stalled"]
        assert client.get("/runs", headers=ADMIN).json()[0]["steps"] == 4  # folded: it is unfinished
        assert client.post("/runs/st/resume", headers=ADMIN).status_code == 200
        assert client.get("/runs/st", headers=ADMIN).json()["stalled"] is False  # this server runs it
        run = wait_finished(client, "st")
    assert run["status"] == "succeeded" and run["stalled"] is False


def test_a_task_diff_and_the_review_queue_over_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from tests.waiting import wait_until
    from tests.workspaces.test_parallel_coding import init_repo, sh

    repo = init_repo(tmp_path / "repo", {"a.txt": ""})
    monkeypatch.chdir(repo)  # the server's repository: where it runs
    doc = {
        "pattern": "tasks", "name": "queue", "workers": 1, "review_queue": True,
        "tasks": {"style": {"prompt": "Write the style guide.", "writes": ["style.txt"],
                            "agent": {"kind": "command", "command": "printf '%s\\n' {{prompt}} > style.txt"}}},
    }  # fmt: skip
    with TestClient(create_app(f"sqlite://{tmp_path / 'tasks.db'}", TOKEN)) as client:
        run_id = client.post("/runs", json={"pattern": yaml.safe_dump(doc)}, headers=ADMIN).json()["run_id"]

        def task() -> dict[str, Any]:
            tasks: dict[str, dict[str, Any]] = client.get(f"/runs/{run_id}", headers=ADMIN).json()["tasks"] or {}
            return tasks.get("style", {})

        wait_until(lambda: task().get("status") == "succeeded", what="the task to wait for review")
        assert task()["writes"] == ["style.txt"] and task()["review"] is True and task()["attempt"] == 1
        early = client.post(f"/runs/{run_id}/tasks/nope/review", json={"approve": True}, headers=ADMIN)
        assert early.status_code == 400 and "no task 'nope'" in early.text
        diff = client.get(f"/runs/{run_id}/tasks/style/diff", headers=ADMIN).json()
        assert "+Write the style guide." in diff["diff"] and diff["status"] == "succeeded"
        rejected = client.post(
            f"/runs/{run_id}/tasks/style/review", json={"approve": False, "note": "use tabs", "by": "alice"}, headers=ADMIN
        )  # fmt: skip
        assert rejected.status_code == 200 and "sent style back" in rejected.json()["outcome"]
        wait_until(
            lambda: task().get("attempt") == 2 and task().get("status") == "succeeded", what="the second attempt"
        )
        assert task()["feedback"] == "alice: use tabs"
        approved = client.post(f"/runs/{run_id}/tasks/style/review", json={"approve": True, "by": "bob"}, headers=ADMIN)
        assert approved.status_code == 200 and "merged style" in approved.json()["outcome"]
        run = wait_finished(client, run_id)
    assert run["status"] == "succeeded" and run["tasks"]["style"]["status"] == "merged"
    assert "This task was sent back: alice: use tabs" in sh(
        repo, "git", "show", f"parallax/{run_id}/integration:style.txt"
    )
