import unittest

from inventory.contract import Item


class ContractTest(unittest.TestCase):
    def test_item(self) -> None:
        self.assertEqual(Item("bolt", 3).quantity, 3)
