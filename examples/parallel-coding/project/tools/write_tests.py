"""Stand-in coding agent: writes tests for the store and pricing modules."""

from pathlib import Path

Path("tests/test_inventory.py").write_text('''import unittest

from inventory.contract import Item
from inventory.pricing import total
from inventory.store import Store


class InventoryTest(unittest.TestCase):
    def test_store_by_sku(self) -> None:
        store = Store()
        store.add(Item("bolt", 3, sku="B-1"))
        self.assertEqual(store.get("B-1").name, "bolt")

    def test_total(self) -> None:
        self.assertEqual(total(Item("bolt", 3, sku="B-1"), 25), 75)
''')
print("wrote tests/test_inventory.py")
