"""Grants: which streams an agent may write and read. Everything not granted is denied.

A grant names streams exactly, or by prefix when the entry ends in '/'
(`runs/r1/cohorts/` grants every cohort stream of run r1).
"""

from __future__ import annotations

from dataclasses import dataclass

from parallax.core.errors import GrantDenied


@dataclass(frozen=True)
class Grants:
    agent: str
    write: tuple[str, ...]
    read: tuple[str, ...]

    def may_read(self, stream: str) -> bool:
        return any(_covers(entry, stream) for entry in (*self.read, *self.write))

    def may_write(self, stream: str) -> bool:
        return any(_covers(entry, stream) for entry in self.write)

    def check_read(self, stream: str) -> None:
        if not self.may_read(stream):
            raise GrantDenied(self.agent, stream, "read")

    def check_write(self, stream: str) -> None:
        if not self.may_write(stream):
            raise GrantDenied(self.agent, stream, "write")


def _covers(entry: str, stream: str) -> bool:
    return stream.startswith(entry) if entry.endswith("/") else stream == entry
