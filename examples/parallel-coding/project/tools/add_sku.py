"""Stand-in coding agent (a command agent making a real edit): adds a `sku` field to the contract."""

from pathlib import Path

path = Path("inventory/contract.py")
text = path.read_text()
if "sku:" not in text:
    path.write_text(text.replace("    quantity: int\n", "    quantity: int\n    sku: str = \"\"\n"))
print("added Item.sku")
