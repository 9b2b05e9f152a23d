"""The pure domain: types, folds and rules. No I/O, and no imports from outer layers."""
