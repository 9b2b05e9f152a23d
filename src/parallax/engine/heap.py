"""Keeping the cyclic garbage collector off a large run's long-lived objects.

A run of thousands of steps holds a large, long-lived heap (the plan's steps, the folded state)
that the collector would otherwise walk again at every full collection, over and over as the
run grows. `frozen_heap()` moves everything alive when the run starts into the collector's
permanent generation (`gc.freeze()`) and gives it back when the last such run in the process
ends (`gc.unfreeze()`), so full collections walk only what the run has made since. Reference
counting still frees everything as usual; only cycles among frozen objects wait for the
unfreeze. Nested and concurrent runs share one freeze.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

LARGE_PLAN = 1000  # steps: below this the collector's walks cost little
_holders = 0


@contextmanager
def frozen_heap(steps: int) -> Iterator[None]:
    global _holders
    if steps < LARGE_PLAN:
        yield
        return
    if _holders == 0:
        gc.freeze()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()
