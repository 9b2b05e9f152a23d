"""The shared types every module uses (a contract: one task owns it)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    name: str
    quantity: int
