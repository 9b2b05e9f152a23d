"""Stand-in coding agent: writes the pricing module."""

from pathlib import Path

Path("inventory/pricing.py").write_text('''"""Prices in cents."""

from inventory.contract import Item


def total(item: Item, unit_cents: int) -> int:
    return item.quantity * unit_cents
''')
print("wrote inventory/pricing.py")
