"""Cohort, inbox and synthesis streams: what a cohort member or a moderator sees, and posting
a step's output to a shared stream exactly once.

Every read here goes through the step's grants, so a member of one cohort cannot see another
cohort's stream unless the topology granted it (a moderator's `rewire` or `breakout`).
"""

from __future__ import annotations

from typing import Any

from parallax.core import events as ev
from parallax.core.errors import StreamNotFound
from parallax.core.events import Event
from parallax.core.expand import cohort_stream, text_of
from parallax.core.grants import Grants
from parallax.core.plan import Step
from parallax.core.runstreams import RunStreams
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record, record_event

MESSAGE_CHARS = 4000  # of one message, in a transcript


def inbox_stream(run_id: str, target: str) -> str:
    return RunStreams(run_id).inbox(target)


def synthesis_stream(run_id: str) -> str:
    return RunStreams(run_id).synthesis


async def read_stream_events(store: StreamStore, stream: str) -> list[Event]:
    try:
        records = await store.read_all(stream)
    except StreamNotFound:
        return []
    return [e for r in records if (e := record_event(r)) is not None]


def transcript(events: list[Event]) -> str:
    """A stream's messages as numbered lines a model can read."""
    lines = []
    for event in events:
        if event.type not in (ev.COHORT_MESSAGE, ev.INBOX_MESSAGE):
            continue
        who = event.data.get("from", "?")
        where = f", round {event.data['round']}" if event.data.get("round") is not None else ""
        text = event.data.get("text") or text_of(event.data.get("output"))
        if len(text) > MESSAGE_CHARS:  # keep every prompt bounded however long a turn was
            text = f"{text[:MESSAGE_CHARS]}... ({len(text) - MESSAGE_CHARS} more characters on the stream)"
        lines.append(f"[{event.seq_num}] {who}{where}: {text}")
    return "\n".join(lines) or "(nothing yet)"


async def stream_context(store: StreamStore, grants: Grants, run_id: str, step: Step) -> dict[str, Any]:
    """`cohort` (name, transcript), `cohorts` (name -> transcript of every other cohort this
    step may read) and `inbox` (messages addressed to it), each read through `grants`."""
    context: dict[str, Any] = {}
    cohorts_prefix = RunStreams(run_id).cohorts
    inbox_prefix = RunStreams(run_id).inboxes
    if step.cohort:
        own = cohort_stream(run_id, step.cohort)
        grants.check_read(own)
        context["cohort"] = {"name": step.cohort, "transcript": transcript(await read_stream_events(store, own))}
    others: dict[str, str] = {}
    inbox: list[str] = []
    for entry in step.reads:
        stream = entry.replace("{run}", run_id)
        if stream == cohorts_prefix:
            grants.check_read(stream)
            for info in await store.list(cohorts_prefix):
                name = info.name.removeprefix(cohorts_prefix)
                others[name] = transcript(await read_stream_events(store, info.name))
        elif stream.startswith(cohorts_prefix):
            grants.check_read(stream)
            others[stream.removeprefix(cohorts_prefix)] = transcript(await read_stream_events(store, stream))
        elif stream.startswith(inbox_prefix):
            grants.check_read(stream)
            for event in await read_stream_events(store, stream):
                inbox.append(f"{event.data.get('from', '?')}: {event.data.get('text', '')}")
    if others or step.cohort or any(e.startswith("runs/{run}/cohorts/") for e in step.reads):
        context["cohorts"] = others
    context["inbox"] = "\n".join(inbox) or "(no messages)"
    return context


async def find_published(store: StreamStore, stream: str, idem: str) -> Event | None:
    """The record a step already posted to `stream` (after a crash between posting and
    recording its output), found by its idempotency key."""
    for event in await read_stream_events(store, stream):
        if event.idem == idem:
            return event
    return None


async def publish(store: StreamStore, stream: str, event: Event) -> None:
    await store.append(stream, AppendInput([event_record(event)]))
