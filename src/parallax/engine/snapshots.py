"""Fold snapshots: a checkpoint of a run's folded state, so resuming a long run reads only the
tail of its control stream.

The coordinator pickles its `RunState` (without the plan, which is immutable and kept once per
plan as a blob of its JSON) into a blob and appends a pointer to `runs/<run>/snapshots`: the
position it was taken at, the seq, timestamp and digest of the control record just before that
position, the fold's version and the blobs' addresses. A snapshot is taken once as many records
have been folded since the last one as the state has steps (and at least `SNAPSHOT_EVERY`):
pickling costs about one step's state per record folded, O(1) per record whatever the run's
size (a snapshot every fixed number of records costs O(steps) per record, which made a large
fan-out quadratic), and a resume folds at most that many records after the snapshot. Once a
newer pointer is written, the older ones are trimmed and their state blobs deleted (plan blobs
are shared by content, so they stay).
A reader takes the newest snapshot only if all of that checks out against the log it is about
to continue (the record is there and hashes the same, the fold version is this code's, the
blob is whole), and otherwise folds from the start: a snapshot can make resuming faster, never
different. Unpickling is restricted to Parallax's own state classes, so a snapshot stream
cannot be used to run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from parallax.core.errors import BlobNotFound, ReadUnwritten, StreamNotFound
from parallax.core.plan import Plan
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState, plan_from
from parallax.streams.base import AppendInput, AppendRecord, ReadLimit, Record, SeqNum, StreamStore, TailOffset

SNAPSHOT_EVERY = 1000  # control records between snapshots, at least
FOLD_VERSION = 2  # bump when the fold's or the snapshot's meaning changes: older ones are then ignored


def snapshot_due(tail: int, last_at: int, state_size: int) -> bool:
    """Whether a coordinator whose last snapshot folds [0, last_at), holding a state of
    `state_size` steps and tasks, takes one at `tail`."""
    return tail - last_at >= max(SNAPSHOT_EVERY, state_size)


def state_size(state: RunState) -> int:
    return len(state.steps) + (len(state.tasks.tasks) if state.tasks is not None else 0)


def snapshot_stream(run_id: str) -> str:
    return RunStreams(run_id).snapshots


def record_digest(record: Record | AppendRecord) -> str:
    digest = hashlib.sha256()
    for name, value in record.headers:
        digest.update(len(name).to_bytes(4, "big") + name + len(value).to_bytes(4, "big") + value)
    digest.update(record.body)
    return digest.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    at: int  # the control stream's tail when taken: the state folds records [0, at)
    last_seq: int
    last_timestamp: int
    last_digest: str
    state_ref: str
    plan_ref: str
    plan_hash: str
    version: int = FOLD_VERSION


_ALLOWED_MODULES = ("parallax.core.",)
_ALLOWED_BUILTINS = {("builtins", "set"), ("builtins", "frozenset"), ("collections", "deque")}


class _StateUnpickler(pickle.Unpickler):
    """Only Parallax's state classes (and plain containers) may be rebuilt."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_MODULES) or (module, name) in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a snapshot may not rebuild {module}.{name}")


def dump_state(state: RunState) -> bytes:
    """The state pickled without its plan (see `dump_plan`)."""
    plan = state.plan
    state.plan = None
    try:
        return pickle.dumps(state, protocol=5)
    finally:
        state.plan = plan


def dump_plan(plan: Plan) -> tuple[bytes, str]:
    """The plan as JSON (as `run.created` holds it) and its content hash. A plan is immutable,
    so this may run in a thread while the run goes on."""
    data = plan.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return orjson.dumps(data), plan.content_hash()


def load_state(data: bytes) -> RunState:
    state = _StateUnpickler(io.BytesIO(data)).load()
    if not isinstance(state, RunState):
        raise pickle.UnpicklingError("a snapshot holds something other than a RunState")
    return state


async def write_snapshot(
    store: StreamStore,
    run_id: str,
    payload: bytes,
    plan: tuple[str, str],
    at: int,
    last: Record | AppendRecord,
    last_timestamp: int,
) -> None:
    """Keep `payload` (a pickled state folding records below `at`, whose plan is the blob
    `plan[0]` with content hash `plan[1]`), point to it, then drop the older snapshots."""
    ref = await store.put_blob(payload)
    body = {
        "version": FOLD_VERSION,
        "at": at,
        "last_seq": at - 1,
        "last_timestamp": last_timestamp,
        "last_digest": record_digest(last),
        "state": ref,
        "plan": plan[0],
        "plan_hash": plan[1],
    }
    stream = snapshot_stream(run_id)
    older = await _pointers(store, stream)
    ack = await store.append(stream, AppendInput([AppendRecord(json.dumps(body).encode())]))
    await store.trim(stream, ack.start.seq_num)
    for pointer in older:
        if pointer.get("state") != ref and isinstance(pointer.get("state"), str):
            await store.delete_blob(pointer["state"])


async def _pointers(store: StreamStore, stream: str) -> list[dict[str, Any]]:
    try:
        records = await store.read_all(stream)
    except StreamNotFound:
        return []
    out = []
    for record in records:
        if record.command is not None:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(record.body)
            if isinstance(data, dict):
                out.append(data)
    return out


async def load_snapshot(store: StreamStore, run_id: str, control: str) -> tuple[RunState, int] | None:
    """The newest snapshot that checks out against `control`, as (state, position), or None."""
    try:  # the newest pointer, and the trim command that may follow it
        batch = await store.read(snapshot_stream(run_id), TailOffset(3), ReadLimit(count=3))
    except StreamNotFound:
        return None
    pointers = [r for r in batch.records if r.command is None]
    if not pointers:
        return None
    try:
        data = json.loads(pointers[-1].body)
        snapshot = Snapshot(
            int(data["at"]), int(data["last_seq"]), int(data["last_timestamp"]), str(data["last_digest"]),
            str(data["state"]), str(data["plan"]), str(data["plan_hash"]), int(data["version"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None
    if snapshot.version != FOLD_VERSION or snapshot.at <= 0 or snapshot.last_seq != snapshot.at - 1:
        return None
    try:
        found = await store.read(control, SeqNum(snapshot.last_seq), ReadLimit(count=1))
    except (StreamNotFound, ReadUnwritten):
        return None
    if not found.records:
        return None
    last = found.records[0]
    if (last.seq_num, last.timestamp, record_digest(last)) != (
        snapshot.last_seq, snapshot.last_timestamp, snapshot.last_digest,
    ):  # fmt: skip
        return None  # another log (a fork, a recreated stream): fold from the start
    try:
        state = load_state(await store.get_blob(snapshot.state_ref))
        plan = plan_from(
            {"plan": orjson.loads(await store.get_blob(snapshot.plan_ref)), "plan_hash": snapshot.plan_hash}
        )
    except (BlobNotFound, pickle.UnpicklingError, EOFError, AttributeError, ImportError, orjson.JSONDecodeError):
        return None
    except ValidationError:
        return None
    if state.next_seq > snapshot.at:
        return None
    state.plan = plan
    return state, snapshot.at
