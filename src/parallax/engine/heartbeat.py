"""Is anyone coordinating this run? A coordinator appends a small record to the run's heartbeat
stream (`runs/<run>/heartbeat`) every `BEAT_S` seconds while it runs, and trims what is older,
so the stream stays a few records long. A run whose log says it is not finished and whose last
beat is older than `STALLED_BEATS` periods has lost its coordinator (killed, crashed, or a `parallax
mcp` whose client went away): `parallax runs` and `parallax inspect` say it is *stalled* and how
to resume it, instead of showing it running forever.

The beat is the store's own timestamp of the record, so one clock judges it: the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

from parallax.core.errors import StreamError
from parallax.core.runstreams import RunStreams
from parallax.streams.base import AppendInput, AppendRecord, ReadLimit, StreamStore, TailOffset

BEAT_S = 5.0
STALLED_BEATS = 6  # beats missed (30 s at the default): a loaded machine or a store hiccup is not a death
TRIM_EVERY = 60  # beats
_HEADERS = ((b"type", b"heartbeat"),)


async def beat(store: StreamStore, run_id: str, coordinator: str, every_s: float = BEAT_S) -> None:
    """Beat until cancelled. A beat the store refuses is skipped (the next one may land); the
    run itself is never failed by its heartbeat."""
    stream = RunStreams(run_id).heartbeat
    body = json.dumps({"coordinator": coordinator, "every_s": every_s}).encode()
    beats = 0
    while True:
        with contextlib.suppress(StreamError, OSError, ConnectionError):
            ack = await store.append(stream, AppendInput([AppendRecord(body=body, headers=_HEADERS)]))
            beats += 1
            if beats % TRIM_EVERY == 0:  # keep the last beat; the trim itself is a record after it
                await store.trim(stream, ack.start.seq_num)
        await asyncio.sleep(every_s)  # the beat's period, not a synchronisation


@dataclass(frozen=True)
class Pulse:
    coordinator: str
    last_beat_ms: int  # the store's timestamp of the last beat
    every_s: float

    def age_s(self, now_ms: int | None = None) -> float:
        return ((now_ms if now_ms is not None else int(time.time() * 1000)) - self.last_beat_ms) / 1000

    def stalled(self, now_ms: int | None = None) -> bool:
        return self.age_s(now_ms) > STALLED_BEATS * self.every_s


async def pulse(store: StreamStore, run_id: str) -> Pulse | None:
    """The run's last heartbeat, or None when no coordinator of this version ever ran it."""
    try:
        batch = await store.read(RunStreams(run_id).heartbeat, TailOffset(4), ReadLimit(count=4))
    except StreamError:
        return None
    beats = [r for r in batch.records if tuple(r.headers) == _HEADERS]  # not a trim's command record
    if not beats:
        return None
    record = beats[-1]
    try:
        data = json.loads(record.body)
        return Pulse(str(data["coordinator"]), record.timestamp, float(data.get("every_s", BEAT_S)))
    except (ValueError, KeyError, TypeError):
        return None
