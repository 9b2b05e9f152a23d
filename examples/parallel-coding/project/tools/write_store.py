"""Stand-in coding agent: writes the store module against the contract (it reads Item.sku)."""

from pathlib import Path

Path("inventory/store.py").write_text('''"""Items by SKU."""

from inventory.contract import Item


class Store:
    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        if not item.sku:
            raise ValueError("an item needs a sku")
        self._items[item.sku] = item

    def get(self, sku: str) -> Item:
        return self._items[sku]
''')
print("wrote inventory/store.py")
