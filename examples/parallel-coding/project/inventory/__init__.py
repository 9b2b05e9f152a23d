"""A tiny inventory package the parallel-coding example works on."""
