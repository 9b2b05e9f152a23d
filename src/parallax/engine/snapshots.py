"""Fold snapshots: a checkpoint of a run's folded state, so resuming a long run reads only the
tail of its control stream.

Every `SNAPSHOT_EVERY` records the coordinator pickles its `RunState` into a blob and appends
a pointer to `runs/<run>/snapshots`: the position it was taken at, the seq, timestamp and digest
of the control record just before that position, the fold's version and the blob's address.
A reader takes the newest snapshot only if all of that checks out against the log it is about
to continue (the record is there and hashes the same, the fold version is this code's, the
blob is whole), and otherwise folds from the start: a snapshot can make resuming faster, never
different. Unpickling is restricted to Parallax's own state classes, so a snapshot stream
cannot be used to run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from typing import Any

from parallax.core.errors import BlobNotFound, ReadUnwritten, StreamNotFound
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.streams.base import AppendInput, AppendRecord, ReadLimit, Record, SeqNum, StreamStore, TailOffset

SNAPSHOT_EVERY = 1000  # control records between snapshots
FOLD_VERSION = 1  # bump when the fold's meaning changes: older snapshots are then ignored


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
    return pickle.dumps(state, protocol=5)


def load_state(data: bytes) -> RunState:
    state = _StateUnpickler(io.BytesIO(data)).load()
    if not isinstance(state, RunState):
        raise pickle.UnpicklingError("a snapshot holds something other than a RunState")
    return state


async def write_snapshot(
    store: StreamStore, run_id: str, payload: bytes, at: int, last: Record | AppendRecord, last_timestamp: int
) -> None:
    """Keep `payload` (a pickled state folding records below `at`) and point to it."""
    ref = await store.put_blob(payload)
    body = {
        "version": FOLD_VERSION,
        "at": at,
        "last_seq": at - 1,
        "last_timestamp": last_timestamp,
        "last_digest": record_digest(last),
        "state": ref,
    }
    await store.append(snapshot_stream(run_id), AppendInput([AppendRecord(json.dumps(body).encode())]))


async def load_snapshot(store: StreamStore, run_id: str, control: str) -> tuple[RunState, int] | None:
    """The newest snapshot that checks out against `control`, as (state, position), or None."""
    try:
        batch = await store.read(snapshot_stream(run_id), TailOffset(1), ReadLimit(count=1))
    except StreamNotFound:
        return None
    if not batch.records:
        return None
    try:
        data = json.loads(batch.records[0].body)
        snapshot = Snapshot(
            int(data["at"]), int(data["last_seq"]), int(data["last_timestamp"]), str(data["last_digest"]),
            str(data["state"]), int(data["version"]),
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
    except (BlobNotFound, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    if state.next_seq > snapshot.at:
        return None
    return state, snapshot.at
