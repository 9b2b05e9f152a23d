"""What the NATS store writes, as pure functions: the frame a record travels in, KV key
escaping, the store URL. No I/O here (see `nats.py` for the store itself)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from parallax.core.errors import StoreUnavailable, StoreURLError, StreamError
from parallax.streams.base import COMMAND_FENCE, COMMAND_TRIM, Record, StreamState

_VERSION = 1
_FRAME = struct.Struct(">BQQ16sB")  # version, timestamp, trim point after, append id, len(token before)


class NatsStoreError(StreamError):
    """The NATS server refused or could not be reached; the message says which and how to fix it."""


class NatsUnavailable(NatsStoreError, StoreUnavailable):
    """The NATS server could not be reached, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Frame:
    timestamp: int
    trim_after: int
    append_id: bytes
    token_before: str
    token_after: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def encode_frame(
    timestamp: int,
    trim_after: int,
    append_id: bytes,
    token_before: str,
    token_after: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> bytes:
    """One record as a message payload (see the module docstring)."""
    before = token_before.encode()
    after = token_after.encode()
    parts = [_FRAME.pack(_VERSION, timestamp, trim_after, append_id, len(before)), before, bytes([len(after)]), after]
    parts.append(struct.pack(">H", len(headers)))
    for name, value in headers:
        parts.append(struct.pack(">II", len(name), len(value)))
        parts.append(name)
        parts.append(value)
    parts.append(body)
    return b"".join(parts)


def decode_frame(payload: bytes) -> Frame:
    version, timestamp, trim_after, append_id, before_len = _FRAME.unpack_from(payload, 0)
    if version != _VERSION:
        raise NatsStoreError(f"a message has frame version {version}; this Parallax reads version {_VERSION}")
    offset = _FRAME.size
    before = payload[offset : offset + before_len].decode()
    offset += before_len
    after_len = payload[offset]
    offset += 1
    after = payload[offset : offset + after_len].decode()
    offset += after_len
    (count,) = struct.unpack_from(">H", payload, offset)
    offset += 2
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        name_len, value_len = struct.unpack_from(">II", payload, offset)
        offset += 8
        name = payload[offset : offset + name_len]
        offset += name_len
        headers.append((name, payload[offset : offset + value_len]))
        offset += value_len
    return Frame(timestamp, trim_after, append_id, before, after, tuple(headers), payload[offset:])


def stream_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:40]


_KEY_SAFE = frozenset("-/_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def encode_key(key: str) -> str:
    """A JetStream KV key for any string: safe characters kept, the rest (and `=`) as =XX bytes."""
    out = []
    for char in key:
        if char in _KEY_SAFE:
            out.append(char)
        else:
            out.extend(f"={byte:02X}" for byte in char.encode())
    return "".join(out) or "=00"


def decode_key(key: str) -> str:
    if key == "=00":
        return ""
    raw = bytearray()
    index = 0
    while index < len(key):
        if key[index] == "=":
            raw.append(int(key[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.extend(key[index].encode())
            index += 1
    return raw.decode()


@dataclass(frozen=True)
class NatsOptions:
    servers: list[str]
    prefix: str
    replicas: int
    storage: str
    create_on_append: bool
    credentials: str | None


def parse_nats_url(url: str) -> NatsOptions:
    """nats://host:port[,host:port...][?replicas=3&storage=file|memory&prefix=PX&create_on_append=true]"""
    body, _, query = url.partition("?")
    parsed = urlsplit(body)
    hosts = [h for h in parsed.netloc.split(",") if h]
    if not hosts:
        raise StoreURLError(f"store URL {url!r} names no NATS server; try nats://127.0.0.1:4222")
    if parsed.path not in ("", "/"):
        raise StoreURLError(f"store URL {url!r}: a NATS URL has no path (got {parsed.path!r})")
    options = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    servers = [f"nats://{h}" for h in hosts]
    try:
        replicas = int(options.pop("replicas", "1"))
    except ValueError:
        raise StoreURLError(f"store URL {url!r}: replicas must be a number") from None
    if not 1 <= replicas <= 5:
        raise StoreURLError(f"store URL {url!r}: replicas must be 1..5, got {replicas}")
    storage = options.pop("storage", "file")
    if storage not in ("file", "memory"):
        raise StoreURLError(f"store URL {url!r}: storage must be file or memory, got {storage!r}")
    prefix = options.pop("prefix", "PX")
    create = options.pop("create_on_append", "true").lower() in ("1", "true", "yes", "on")
    credentials = options.pop("creds", None)
    if options:
        raise StoreURLError(
            f"store URL {url!r}: unknown option(s) {', '.join(sorted(options))}; "
            "known: replicas, storage, prefix, create_on_append, creds"
        )
    return NatsOptions(servers, prefix, replicas, storage, create, credentials)


def frames_for(records: Sequence[Record], state: StreamState, append_id: bytes) -> list[bytes]:
    """Each record's payload: its frame carries the token before and after it and the trim
    point after it, so the newest message is always the stream's state."""
    payloads = []
    token = state.fencing_token
    trim = state.trim_point
    for record in records:
        before = token
        command = record.command
        if command == COMMAND_FENCE:
            token = record.body.decode()
        elif command == COMMAND_TRIM:
            trim = max(trim, struct.unpack(">Q", record.body)[0])
        trim_after = min(trim, record.seq_num + 1)
        payloads.append(
            encode_frame(record.timestamp, trim_after, append_id, before, token, record.headers, record.body)
        )
    return payloads
