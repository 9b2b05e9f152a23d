"""The agent registry: agents and workers announce themselves with capabilities, heartbeat,
and expire after their TTL. It lives in the store's `registry` key-value bucket (a JetStream KV
bucket on NATS, a folded stream elsewhere), so every process sharing the store sees the same
registry, and a restart loses nothing.

Patterns choose registered agents by capability (`select: {capabilities: [...], min: N}`);
the choice is made when the run is created, from the live registry, and written into the plan.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from parallax.core.errors import UserError
from parallax.core.plan import AgentSpec
from parallax.streams.base import StreamStore
from parallax.streams.kv import KeyExists, RevisionMismatch

BUCKET = "registry"


def _now_ms() -> int:
    return int(time.time() * 1000)


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
    out: dict[str, Registered] = {}
    for entry in await store.kv(BUCKET).entries():
        try:
            data = json.loads(entry.value)
            out[entry.key] = Registered(**data)
        except (ValueError, TypeError):
            continue  # not written by this registry
    return out


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
    now = _now_ms()
    entry = Registered(agent_id, sorted(set(capabilities)), agent, ttl_s, now, now, meta or {})
    await store.kv(BUCKET).put(agent_id, json.dumps(asdict(entry)).encode())


async def heartbeat(store: StreamStore, agent_id: str) -> None:
    """Renew an agent's TTL (a compare-and-swap, so a concurrent re-registration is not undone)."""
    kv = store.kv(BUCKET)
    while True:
        current = await kv.get(agent_id)
        if current is None:
            raise UserError(f"no registered agent {agent_id!r}")
        data = json.loads(current.value)
        data["last_seen_ms"] = _now_ms()
        try:
            await kv.update(agent_id, json.dumps(data).encode(), current.revision)
            return
        except (RevisionMismatch, KeyExists):
            continue


async def deregister(store: StreamStore, agent_id: str) -> None:
    kv = store.kv(BUCKET)
    if await kv.get(agent_id) is None:
        raise UserError(f"no registered agent {agent_id!r}")
    await kv.delete(agent_id)


def live_snapshot(registry: dict[str, Registered], now_ms: int | None = None) -> list[dict[str, Any]]:
    """The live agents, as the pattern compiler takes them."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return [
        {"id": r.id, "capabilities": r.capabilities, "agent": r.agent}
        for r in sorted(registry.values(), key=lambda r: r.id)
        if r.live(now)
    ]
