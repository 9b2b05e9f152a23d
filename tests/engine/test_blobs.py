"""Blobs: content-addressed bytes beside the streams, and step outputs too large for a record."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from parallax.agents.base import AgentContext
from parallax.core.errors import BlobNotFound
from parallax.core.plan import AgentSpec, Plan, Step
from parallax.engine import api
from parallax.engine.control import control_stream
from parallax.streams import AppendInput, AppendRecord, StreamStore
from parallax.streams.memory import MemoryStore
from tests.nats_fixtures import every_store, nats_server

__all__ = ["every_store", "nats_server"]


async def test_blobs_round_trip_by_content(store: StreamStore) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)  # several chunks, not a multiple of one
    ref = await store.put_blob(data)
    assert ref.startswith("sha256:")
    assert await store.put_blob(data) == ref  # the same bytes, the same address, stored once
    assert await store.get_blob(ref) == data
    assert await store.get_blob(await store.put_blob(b"")) == b""
    with pytest.raises(BlobNotFound):
        await store.get_blob("sha256:" + "0" * 64)


async def test_an_incomplete_blob_is_not_returned() -> None:
    store = MemoryStore()
    data = b"x" * 1_000_000
    ref = await store.put_blob(data)
    digest = ref.removeprefix("sha256:")
    # A writer that died after its first chunk: no end record, so no blob.
    await store.append(f"blobs/{'1' * 64}", AppendInput([AppendRecord(b"partial")]))
    with pytest.raises(BlobNotFound):
        await store.get_blob("sha256:" + "1" * 64)
    assert await store.get_blob(f"sha256:{digest}") == data


async def big(ctx: AgentContext) -> dict[str, Any]:
    return {"text": "y" * 3_000_000, "n": 1}


async def test_a_step_output_over_a_record_goes_to_a_blob(store: StreamStore) -> None:
    plan = Plan(
        name="big",
        steps=(Step(id="big", kind="agent", agent=AgentSpec(kind="python", ref=f"{__name__}:big")),),
    )
    state = await api.run_plan(store, plan, run_id="big")
    assert state.status == "succeeded"
    assert state.steps["big"].output == {"text": "y" * 3_000_000, "n": 1}
    records = await store.read_all(control_stream("big"))
    assert max(len(r.body) for r in records) < 64 * 1024  # the log holds a reference, not 3 MB
    again = await api.load_run(store, "big")  # read back: resolved from the blob
    assert again.steps["big"].output == state.steps["big"].output


async def instant(ctx: AgentContext) -> dict[str, Any]:
    return {"step": ctx.step_id}


def _wide_plan(n: int) -> Plan:
    """A fan-out whose plan is far over the 1 MiB record limit (each step's prompt ~900 bytes)."""
    agent = AgentSpec(kind="python", ref=f"{__name__}:instant")
    words = " ".join(f"point-{i}" for i in range(100))
    steps = tuple(Step(id=f"a{i}", kind="agent", agent=agent, prompt=f"{i}: {words}") for i in range(n))
    final = Step(id="last", kind="agent", agent=agent, after=tuple(s.id for s in steps))
    return Plan(name="wide", steps=(*steps, final))


async def test_a_plan_over_a_record_goes_to_a_blob_and_runs(store: StreamStore) -> None:
    plan = _wide_plan(1500)
    assert len(plan.canonical_json()) > 1024 * 1024  # one record could not hold it
    state = await api.run_plan(store, plan, run_id="wide")
    assert state.status == "succeeded"
    assert state.steps["last"].output == {"step": "last"}
    records = await store.read_all(control_stream("wide"))
    assert max(len(r.body) for r in records) < 64 * 1024  # the log names the plan's blob
    again = await api.load_run(store, "wide")
    assert again.plan is not None and again.plan.content_hash() == plan.content_hash()
    listed = {r.run_id: r for r in await api.list_runs(store)}
    assert (listed["wide"].name, listed["wide"].status, listed["wide"].steps) == ("wide", "succeeded", 1501)
    forked = await api.fork_run(store, "wide", 2, plan=plan)  # a fork that replaces the plan: a blob too
    assert (await api.load_run(store, forked)).plan == plan


async def test_listing_survives_control_streams_parallax_did_not_write(store: StreamStore) -> None:
    from parallax.core.events import Event
    from parallax.streams.folded import event_record

    odd = {
        "badsummary": [Event("run.created", {"name": "x", "steps": "many"}), Event("run.finished", {"no": "status"})],
        "missingblob": [Event("run.created", {"plan": {"$blob": "sha256:" + "0" * 64, "bytes": 1}, "run_id": "m"})],
        "badplan": [Event("run.created", {"plan": {"name": 5}, "run_id": "b"})],
        "plain": [],
    }
    for run_id, events in odd.items():
        records = [event_record(e) for e in events] or [AppendRecord(b"not an event")]
        await store.append(control_stream(run_id), AppendInput(records))
    listed = {r.run_id: (r.name, r.status) for r in await api.list_runs(store)}
    assert listed == dict.fromkeys(odd, ("?", "?"))
