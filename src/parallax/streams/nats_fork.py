"""`fork` on the NATS store: a new JetStream stream holding a prefix of another at the same
positions (`first_seq`), with the fencing token and trim point in force there.

It works through `ForkingStore`, the few stream operations of the NATS store (`streams/nats.py`)
a fork is made of, so this module does not depend on the store that uses it."""

from __future__ import annotations

from typing import Any, Protocol

from parallax.core.errors import ReadUnwritten, StreamExists, StreamNotFound
from parallax.streams.base import StreamInfo, StreamState
from parallax.streams.nats_codec import Frame, NatsStoreError, encode_frame
from parallax.streams.semantics import validate_stream_name


class ForkingStore(Protocol):
    """What `fork_stream` needs of the NATS store: its stream-level operations."""

    async def _fetch_state(self, stream: str) -> StreamState: ...

    async def _info(self, stream: str) -> dict[str, Any]: ...

    async def _direct_batch(
        self, stream: str, start: int, count: int, max_bytes: int | None
    ) -> list[tuple[int, Frame]]: ...

    async def _add_stream(self, stream: str, *, first_seq: int = 0, base: StreamState | None = None) -> StreamInfo: ...

    async def _publish(self, stream: str, payloads: list[bytes], expected_last: int) -> dict[str, Any] | None: ...


async def fork_stream(store: ForkingStore, src: str, dst: str, at_seq: int) -> StreamInfo:
    validate_stream_name(src)
    validate_stream_name(dst)
    state = await store._fetch_state(src)
    try:
        await store._info(dst)
    except StreamNotFound:
        pass
    else:
        raise StreamExists(dst)
    if at_seq < 0 or at_seq > state.next_seq:
        raise ReadUnwritten(state.next_seq, stream=src, start=at_seq)
    start = min(state.trim_point, at_seq)
    frames: list[tuple[int, Frame]] = []
    position = start
    while position < at_seq:
        batch = await store._direct_batch(src, position, min(1000, at_seq - position), None)
        if not batch:
            break
        frames.extend((seq, f) for seq, f in batch if seq < at_seq)
        position = batch[-1][0] + 1
    if frames:
        last = frames[-1][1]
        base = StreamState(at_seq, last.timestamp, last.token_after, min(state.trim_point, at_seq))
    else:
        # Nothing readable below at_seq: the state there is the stream's own (at the tail), or
        # the token the first kept record started from (a fork inside a trimmed prefix).
        after = await store._direct_batch(src, at_seq, 1, None) if at_seq < state.next_seq else []
        token = after[0][1].token_before if after else state.fencing_token
        ts = state.last_timestamp if at_seq == state.next_seq else 0
        base = StreamState(at_seq, ts, token, min(state.trim_point, at_seq))
    first = frames[0][0] if frames else at_seq
    info = await store._add_stream(dst, first_seq=first, base=base)
    expected = first
    for index in range(0, len(frames), 1000):
        chunk = frames[index : index + 1000]
        payloads = [
            encode_frame(
                f.timestamp,
                base.trim_point if seq == at_seq - 1 else min(f.trim_after, base.trim_point),
                f.append_id,
                f.token_before,
                f.token_after,
                f.headers,
                f.body,
            )
            for seq, f in chunk
        ]
        error = await store._publish(dst, payloads, expected)
        if error is not None:
            raise NatsStoreError(f"copying {src!r} into {dst!r}: {error.get('description')}")
        expected += len(chunk)
    return info
