"""The agent registry through the API on a real store: registration with capabilities, TTL
expiry and heartbeats, and patterns selecting live agents by capability at run creation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from parallax.server.app import create_app
from tests.waiting import wait_until

TOKEN = "registry-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SELECT = """pattern: fanout
name: reviewers
agents:
  review:
    select: {capabilities: [python, review], min: 2}
merge: {}
"""


def test_agents_register_expire_and_are_selected(tmp_path: Path) -> None:
    with TestClient(create_app(f"sqlite://{tmp_path / 'r.db'}", TOKEN)) as client:
        echo = {"kind": "command", "command": 'echo \'{"verdict": "ok"}\''}
        for agent_id, caps, ttl in (("rev-1", ["python", "review"], 60), ("rev-2", ["python", "review", "go"], 60),
                                    ("docs-1", ["writing"], 60)):  # fmt: skip
            made = client.post("/registry/agents", json={"id": agent_id, "capabilities": caps, "agent": echo,
                                                         "ttl_s": ttl}, headers=ADMIN)  # fmt: skip
            assert made.status_code == 201, made.text
        bad = client.post("/registry/agents", json={"id": "x", "capabilities": ["a"], "agent": {"kind": "llm"}},
                          headers=ADMIN)  # fmt: skip
        assert bad.status_code == 400 and "needs `model`" in bad.text
        assert [a["id"] for a in client.get("/registry/agents", headers=ADMIN).json()] == ["docs-1", "rev-1", "rev-2"]
        run = client.post("/runs", json={"pattern": SELECT}, headers=ADMIN)
        assert run.status_code == 201, run.text
        steps = [s["id"] for s in client.get(f"/runs/{run.json()['run_id']}", headers=ADMIN).json()["steps"]]
        assert steps == ["review-rev-1", "review-rev-2", "merge"]
        # rev-2 registers again with a short TTL (a short one from the start could run out before the
        # run above selected it, on a loaded machine), and sends no heartbeat: the TTL runs out
        short = client.post("/registry/agents", json={"id": "rev-2", "capabilities": ["python", "review", "go"],
                                                      "agent": echo, "ttl_s": 0.5}, headers=ADMIN)  # fmt: skip
        assert short.status_code == 201, short.text

        def live() -> list[str]:
            return [a["id"] for a in client.get("/registry/agents", headers=ADMIN).json()]

        wait_until(lambda: "rev-2" not in live(), timeout=30, what="rev-2's TTL to run out")
        assert live() == ["docs-1", "rev-1"]
        refused = client.post("/runs", json={"pattern": SELECT}, headers=ADMIN)
        assert refused.status_code == 400
        assert "needs 2 live agent(s) with ['python', 'review']; the registry has 1 (rev-1)" in refused.text
        assert client.post("/registry/agents/rev-1/heartbeat", headers=ADMIN).status_code == 200
        assert client.delete("/registry/agents/docs-1", headers=ADMIN).status_code == 200
        everyone = client.get("/registry/agents", params={"all": True}, headers=ADMIN).json()
        assert [(a["id"], a["live"]) for a in everyone] == [("rev-1", True), ("rev-2", False)]
        assert client.post("/registry/agents/nope/heartbeat", headers=ADMIN).status_code == 400
    # the registry lives in the store: a new server sees it
    with TestClient(create_app(f"sqlite://{tmp_path / 'r.db'}", TOKEN)) as client:
        assert [a["id"] for a in client.get("/registry/agents", headers=ADMIN).json()] == ["rev-1"]
