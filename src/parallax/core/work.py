"""The work board: agent attempts a coordinator offers to worker processes.

A run's board is the fold of `runs/<run>/work`. The coordinator appends `work.offered`; a
worker takes an offer with `work.claimed` (a conditional append at the tail it folded), keeps
it with `work.renewed`, and ends it with `work.done` or `work.failed`. The fold accepts only
legal transitions, judged at each record's timestamp, so every process folding the same log
agrees on who holds what:

- a claim is accepted on an open offer, or on a claimed one whose lease ran out before the
  claim's timestamp (the holder presumably died);
- a renewal, result or failure is accepted only from the current holder, so a worker whose
  lease was taken over cannot report: once a result is accepted, nobody else runs the offer;
- a withdrawn offer (the run was cancelled) accepts nothing more.

Offer ids are `<step>#<n>` where n - 1 is how many failures the step has on the control log:
a coordinator that takes over after a crash computes the same id and adopts the offer (and
any result already on it) instead of running the attempt again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from parallax.core import events as ev
from parallax.core.events import Event

OfferStatus = Literal["open", "claimed", "done", "failed", "withdrawn"]


@dataclass
class Offer:
    id: str
    step: str
    attempt: int
    payload: dict[str, Any]
    lease_s: float
    status: OfferStatus = "open"
    holder: str | None = None
    until_ms: int = 0
    result: dict[str, Any] | None = None
    claims: int = 0  # accepted claims (> 1 when a lease expired and another worker took over)
    offered_at: int = 0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "withdrawn")

    def claimable(self, now_ms: int) -> bool:
        return self.status == "open" or (self.status == "claimed" and self.until_ms < now_ms)


def offer_id(step: str, failures: int) -> str:
    return f"{step}#{failures + 1}"


@dataclass
class WorkBoard:
    offers: dict[str, Offer] = field(default_factory=dict[str, Offer])
    tail: int = 0  # one past the last record folded

    def apply(self, event: Event) -> bool:
        """Fold one event; True if it was accepted."""
        data = event.data
        kind = event.type
        if kind == ev.WORK_OFFERED:
            if data["id"] in self.offers:
                return False
            self.offers[data["id"]] = Offer(
                data["id"], data["step"], int(data.get("attempt", 1)), dict(data.get("payload") or {}),
                float(data.get("lease_s", 15.0)), offered_at=event.timestamp,
            )  # fmt: skip
            return True
        offer = self.offers.get(str(data.get("id")))
        if offer is None:
            return False
        worker = data.get("worker")
        if kind == ev.WORK_CLAIMED:
            if not offer.claimable(event.timestamp):
                return False
            offer.status = "claimed"
            offer.holder = worker
            offer.until_ms = int(data["until_ms"])
            offer.claims += 1
            return True
        if kind == ev.WORK_WITHDRAWN:
            if offer.finished:
                return False
            offer.status = "withdrawn"
            return True
        if offer.status != "claimed" or offer.holder != worker:
            return False
        if kind == ev.WORK_RENEWED:
            offer.until_ms = int(data["until_ms"])
            return True
        if kind in (ev.WORK_DONE, ev.WORK_FAILED):
            offer.status = "done" if kind == ev.WORK_DONE else "failed"
            offer.result = dict(data.get("result") or {})
            return True
        return False

    def claimable(self, now_ms: int) -> list[Offer]:
        return [o for o in self.offers.values() if o.claimable(now_ms)]

    @property
    def outstanding(self) -> int:
        return sum(1 for o in self.offers.values() if not o.finished)
