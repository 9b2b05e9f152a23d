"""The agent registry: agents and workers announce themselves with capabilities, heartbeat,
and expire after their TTL. Its state is the fold of the `registry/agents` stream, so every
process sharing the store sees the same registry, and a restart loses nothing.

Patterns choose registered agents by capability (`select: {capabilities: [...], min: N}`);
the choice is made when the run is created, from the live registry, and written into the plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from parallax.core.errors import StreamNotFound, UserError
from parallax.core.events import Event, decode_event
from parallax.core.plan import AgentSpec
from parallax.streams.base import AppendInput, AppendRecord, StreamStore

STREAM = "registry/agents"


@dataclass
class Registered:
    id: str
    capabilities: list[str]
    agent: dict[str, Any]
    ttl_s: float
    last_seen_ms: int
    registered_ms: int
    meta: dict[str, Any] = field(default_factory=dict[str, Any])

    def live(self, now_ms: int) -> bool:
        return self.last_seen_ms + self.ttl_s * 1000 > now_ms


async def load_registry(store: StreamStore) -> dict[str, Registered]:
    try:
        records = await store.read_all(STREAM)
    except StreamNotFound:
        return {}
    out: dict[str, Registered] = {}
    for record in records:
        event = decode_event(record.headers, record.body, record.seq_num, record.timestamp)
        if event is None:
            continue
        data = event.data
        if event.type == "agent.registered":
            out[data["id"]] = Registered(
                data["id"], list(data.get("capabilities", [])), dict(data.get("agent", {})),
                float(data.get("ttl_s", 60)), record.timestamp, record.timestamp, dict(data.get("meta", {})),
            )  # fmt: skip
        elif event.type == "agent.heartbeat" and data["id"] in out:
            out[data["id"]].last_seen_ms = record.timestamp
        elif event.type == "agent.deregistered":
            out.pop(data["id"], None)
    return out


async def _append(store: StreamStore, event: Event) -> None:
    headers, body = event.encode()
    await store.append(STREAM, AppendInput([AppendRecord(body=body, headers=headers)]))


async def register(
    store: StreamStore, agent_id: str, capabilities: list[str], agent: dict[str, Any], ttl_s: float = 60.0,
    meta: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    try:
        AgentSpec.model_validate(agent)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"agent {agent_id}: {'.'.join(map(str, first['loc'])) or 'agent'}: {first['msg']}") from None
    if ttl_s <= 0:
        raise UserError("ttl_s must be positive")
    data = {
        "id": agent_id,
        "capabilities": sorted(set(capabilities)),
        "agent": agent,
        "ttl_s": ttl_s,
        "meta": meta or {},
    }
    await _append(store, Event("agent.registered", data))


async def heartbeat(store: StreamStore, agent_id: str) -> None:
    registry = await load_registry(store)
    if agent_id not in registry:
        raise UserError(f"no registered agent {agent_id!r}")
    await _append(store, Event("agent.heartbeat", {"id": agent_id}))


async def deregister(store: StreamStore, agent_id: str) -> None:
    registry = await load_registry(store)
    if agent_id not in registry:
        raise UserError(f"no registered agent {agent_id!r}")
    await _append(store, Event("agent.deregistered", {"id": agent_id}))


def live_snapshot(registry: dict[str, Registered], now_ms: int | None = None) -> list[dict[str, Any]]:
    """The live agents, as the pattern compiler takes them."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return [
        {"id": r.id, "capabilities": r.capabilities, "agent": r.agent}
        for r in sorted(registry.values(), key=lambda r: r.id)
        if r.live(now)
    ]
