"""Confidence policies, decided purely from a result's confidence (see `ConfidencePolicy`)."""

from __future__ import annotations

from typing import Any

from parallax.core.errors import LowConfidence
from parallax.core.plan import ConfidencePolicy


def check_confidence(policy: ConfidencePolicy | None, confidence: float | None, usage: dict[str, Any]) -> None:
    """Raise LowConfidence when the step's policy does not take this result as it is."""
    if policy is None or confidence is None:
        return
    escalate = policy.escalate_below is not None and confidence < policy.escalate_below
    if policy.retry_below is not None and confidence < policy.retry_below:
        raise LowConfidence(
            f"confidence {confidence:.2f} is below retry_below {policy.retry_below}",
            retryable=True,
            escalate=escalate,
            usage=usage,
        )
    if escalate:
        raise LowConfidence(
            f"confidence {confidence:.2f} is below escalate_below {policy.escalate_below}",
            retryable=False,
            escalate=True,
            usage=usage,
        )
    if policy.accept is not None and confidence < policy.accept:
        raise LowConfidence(
            f"confidence {confidence:.2f} is below accept {policy.accept}",
            retryable=False,
            escalate=False,
            usage=usage,
        )
