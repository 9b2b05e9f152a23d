"""Five views of one feature, merged into one spec with every disagreement surfaced."""
