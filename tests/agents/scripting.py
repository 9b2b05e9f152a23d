"""Shared by the scripted model servers (test doubles at the HTTP boundary)."""

from __future__ import annotations

PEERS_SECTION = "## Tasks running beside you"  # engine/peers.py appends it to a task's prompt


def own_part(prompt: str) -> str:
    """A task's own prompt, without the section about its peers: a script is keyed by what the
    task was asked, and a peer's prompt quoted there must not select the peer's script."""
    return prompt.split(PEERS_SECTION, 1)[0]
