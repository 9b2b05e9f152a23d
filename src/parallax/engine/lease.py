"""Fenced leases: who holds a role (the coordinator of a run) and until when.

A lease is a key in the store's `leases` bucket holding `{holder, until_ms}`; taking, renewing
and releasing it are compare-and-swaps on the key's revision, so two processes never both
believe they hold it. The revision at which a holder took the lease is its *epoch*; the
fencing token derived from it is written to the streams the holder guards (`take_over`), so a
holder that lost the lease — paused, partitioned, presumed dead — is refused by the stream on
its next append even if it has not noticed yet.

Expiry compares `until_ms` with the reader's clock: machines are assumed to keep clocks within
a small fraction of the lease's TTL (NTP does); the fencing token keeps the log safe when they
do not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from parallax.streams.base import StreamStore
from parallax.streams.kv import KeyExists, KeyValue, RevisionMismatch

BUCKET = "leases"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Lease:
    key: str
    holder: str
    epoch: int  # the revision at which this holder took the lease
    revision: int  # the revision of its latest renewal
    until_ms: int

    @property
    def token(self) -> str:
        """The fencing token for streams this holder guards (<= 36 bytes)."""
        return f"{self.holder[:24]}@{self.epoch}"[:36]


@dataclass(frozen=True)
class LeaseInfo:
    holder: str
    until_ms: int
    revision: int

    def live(self, now_ms: int | None = None) -> bool:
        return self.until_ms > (now_ms if now_ms is not None else _now_ms())


class Leases:
    def __init__(self, store: StreamStore) -> None:
        self.kv: KeyValue = store.kv(BUCKET)

    async def info(self, key: str) -> LeaseInfo | None:
        entry = await self.kv.get(key)
        if entry is None:
            return None
        data = json.loads(entry.value)
        return LeaseInfo(str(data["holder"]), int(data["until_ms"]), entry.revision)

    async def acquire(self, key: str, holder: str, ttl_s: float) -> Lease | None:
        """Take the lease if it is free, expired, or already ours; None if someone else holds it."""
        until = _now_ms() + int(ttl_s * 1000)
        value = json.dumps({"holder": holder, "until_ms": until}).encode()
        current = await self.info(key)
        try:
            if current is None:
                revision = await self.kv.create(key, value)
            elif current.holder == holder or not current.live():
                revision = await self.kv.update(key, value, current.revision)
            else:
                return None
        except (KeyExists, RevisionMismatch):
            return None  # someone else got there first
        return Lease(key, holder, revision, revision, until)

    async def renew(self, lease: Lease, ttl_s: float) -> bool:
        """Extend a held lease; False if it was lost (taken over after expiring)."""
        until = _now_ms() + int(ttl_s * 1000)
        value = json.dumps({"holder": lease.holder, "until_ms": until}).encode()
        try:
            lease.revision = await self.kv.update(lease.key, value, lease.revision)
        except RevisionMismatch:
            return False
        lease.until_ms = until
        return True

    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (expired now), unless it is no longer ours."""
        value = json.dumps({"holder": lease.holder, "until_ms": 0}).encode()
        try:
            lease.revision = await self.kv.update(lease.key, value, lease.revision)
        except RevisionMismatch:
            return
